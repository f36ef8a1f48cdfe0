// Configure-time probe (try_run): exit 0 and name the GPU when the CUDA runtime sees one.
#include <cuda_runtime.h>

#include <cstdio>

int main() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) return 1;
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return 1;
    std::printf("%d GPU(s), %s, sm_%d%d", count, prop.name, prop.major, prop.minor);
    return 0;
}
