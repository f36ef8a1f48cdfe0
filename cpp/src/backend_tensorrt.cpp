// GPU inference with TensorRT 10 (IRuntime -> ICudaEngine -> IExecutionContext, setInputShape /
// setTensorAddress / enqueueV3). Pre-processing and decoding run as CUDA kernels on the same stream, so a frame
// crosses PCIe (or Orin's shared memory) once in and K * 3 floats out.
//
// The engine is built on the target by trtexec from one of the artifact's ONNX graphs (cpp/README.md); it has the
// artifact's I/O: input "image" float32 (N, 3, H, W), outputs "keypoints" + "scores" or "heatmaps", all float32.
#include <NvInfer.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "backend.hpp"
#include "cuda_kernels.hpp"
#include "decode.hpp"
#include "error.hpp"

namespace tardis {

namespace {

void cuda_check(cudaError_t status, const std::string& what) {
    if (status != cudaSuccess)
        throw Error(TARDIS_ERROR_INFERENCE, what + ": CUDA error " + cudaGetErrorName(status) + " (" +
                                                cudaGetErrorString(status) + ")");
}

// Keeps TensorRT's last error so a failed call can say why.
class Logger final : public nvinfer1::ILogger {
public:
    void log(Severity severity, const char* message) noexcept override {
        if (severity <= Severity::kERROR) {
            try {
                last_error_ = message;
            } catch (...) {
            }
        }
    }
    std::string last_error() const { return last_error_.empty() ? "no message from TensorRT" : last_error_; }

private:
    std::string last_error_;
};

// A device allocation that grows on demand.
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer() {
        if (ptr_) cudaFree(ptr_);
    }
    void* get() const { return ptr_; }
    void* reserve(size_t bytes) {
        if (bytes > size_) {
            if (ptr_) cuda_check(cudaFree(ptr_), "cudaFree");
            ptr_ = nullptr;
            size_ = 0;
            cuda_check(cudaMalloc(&ptr_, bytes), "cudaMalloc of " + std::to_string(bytes) + " bytes");
            size_ = bytes;
        }
        return ptr_;
    }

private:
    void* ptr_ = nullptr;
    size_t size_ = 0;
};

std::string dims_str(const nvinfer1::Dims& d) {
    std::string s = "(";
    for (int i = 0; i < d.nbDims; ++i) s += (i ? ", " : "") + std::to_string(d.d[i]);
    return s + ")";
}

class TensorRtBackend final : public Backend {
public:
    TensorRtBackend(const Metadata& meta, const std::string& engine_path, int cuda_device)
        : meta_(meta), device_(cuda_device), engine_path_(engine_path) {
        std::ifstream in(engine_path, std::ios::binary | std::ios::ate);
        if (!in)
            throw Error(TARDIS_ERROR_NOT_FOUND,
                        "TensorRT engine " + engine_path +
                            " not found; build it on this device with the artifact's trtexec_<precision>.sh "
                            "(cpp/README.md) or pass tardis_runner_options.engine_path");
        std::vector<char> blob(static_cast<size_t>(in.tellg()));
        in.seekg(0);
        in.read(blob.data(), static_cast<std::streamsize>(blob.size()));

        cuda_check(cudaSetDevice(device_), "cudaSetDevice(" + std::to_string(device_) + ")");
        cudaStream_t stream = nullptr;
        cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
        stream_.reset(stream);
        runtime_.reset(nvinfer1::createInferRuntime(logger_));
        if (!runtime_) throw Error(TARDIS_ERROR_MODEL, "TensorRT createInferRuntime failed: " + logger_.last_error());
        engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
        if (!engine_)
            throw Error(TARDIS_ERROR_MODEL, "TensorRT cannot deserialize " + engine_path + ": " + logger_.last_error() +
                                                " (engines only load with the TensorRT version and GPU that built "
                                                "them; rebuild it with trtexec on this device)");
        context_.reset(engine_->createExecutionContext());
        if (!context_) throw Error(TARDIS_ERROR_MODEL, "TensorRT createExecutionContext failed: " + logger_.last_error());
        inspect_io();
    }

    tardis_backend kind() const override { return TARDIS_BACKEND_TENSORRT; }

    void run(const ImageView& image, const std::vector<Affine>& image_to_input, float* keypoints_input,
             float* scores) override {
        const int k = meta_.num_keypoints();
        for_each_batch(image, image_to_input, [&](int first, int count) {
            collect(count, keypoints_input + static_cast<size_t>(first) * k * 2,
                    scores + static_cast<size_t>(first) * k);
        });
    }

    void run_heatmaps(const ImageView& image, const std::vector<Affine>& image_to_input, float* heatmaps) override {
        if (!heatmaps_)
            throw Error(TARDIS_ERROR_UNSUPPORTED, engine_path_ + " decodes inside the graph; raw heatmaps need an "
                                                                 "engine with the output \"heatmaps\"");
        const size_t floats = static_cast<size_t>(meta_.num_keypoints()) * meta_.heatmap_height * meta_.heatmap_width;
        for_each_batch(image, image_to_input, [&](int first, int count) {
            cuda_check(cudaMemcpyAsync(heatmaps + floats * first, heatmaps_buf_.get(), floats * count * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_.get()),
                       "copying heatmaps to the host");
            cuda_check(cudaStreamSynchronize(stream_.get()), "TensorRT inference");
        });
    }

private:
    // Copy the image to the GPU once, then warp and infer the crops max_batch_ at a time; `collect(first, count)`
    // takes each batch's outputs off the GPU.
    template <typename Collect>
    void for_each_batch(const ImageView& image, const std::vector<Affine>& image_to_input, Collect&& collect_batch) {
        cuda_check(cudaSetDevice(device_), "cudaSetDevice(" + std::to_string(device_) + ")");
        const size_t row = 3 * static_cast<size_t>(image.width);
        uint8_t* d_src = static_cast<uint8_t*>(src_.reserve(row * image.height));
        cuda_check(cudaMemcpy2DAsync(d_src, row, image.data, image.stride, row, static_cast<size_t>(image.height),
                                     cudaMemcpyHostToDevice, stream_.get()),
                   "copying the image to the GPU");
        const bool swap_rb = image.bgr != (meta_.color == "BGR");
        const int w = meta_.input_width, h = meta_.input_height;
        const size_t crop_floats = static_cast<size_t>(3) * w * h;
        const int total = static_cast<int>(image_to_input.size());
        for (int first = 0; first < total; first += max_batch_) {
            const int count = std::min(max_batch_, total - first);
            const int batch = static_batch_ ? max_batch_ : count;  // a static engine always runs its full batch
            float* d_input = static_cast<float*>(input_.reserve(crop_floats * batch * sizeof(float)));
            if (batch > count)
                cuda_check(cudaMemsetAsync(d_input + crop_floats * count, 0,
                                           crop_floats * (batch - count) * sizeof(float), stream_.get()),
                           "clearing padded crops");
            for (int i = 0; i < count; ++i)
                cuda::warp_to_planar(d_src, image.width, image.height, row, image_to_input[first + i], w, h, swap_rb,
                                     d_input + crop_floats * i, stream_.get());
            infer(d_input, batch);
            collect_batch(first, count);
        }
    }

    // Find the artifact's tensors in the engine and check their types and sizes against model.json.
    void inspect_io() {
        bool has_input = false, has_kps = false, has_scores = false;
        for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
            const char* name = engine_->getIOTensorName(i);
            if (engine_->getTensorDataType(name) != nvinfer1::DataType::kFLOAT)
                throw Error(TARDIS_ERROR_MODEL, engine_path_ + ": tensor \"" + name +
                                                    "\" is not float32; the artifact's graphs keep FP32 I/O (build "
                                                    "the engine without --inputIOFormats/--outputIOFormats)");
            const std::string n = name;
            has_input |= n == kInputName;
            heatmaps_ |= n == kOutputHeatmaps;
            has_kps |= n == kOutputKeypoints;
            has_scores |= n == kOutputScores;
        }
        if (!has_input || !(heatmaps_ || (has_kps && has_scores)))
            throw Error(TARDIS_ERROR_MODEL, engine_path_ + " lacks the artifact's tensors: input \"image\" and "
                                                           "outputs \"keypoints\" + \"scores\" or \"heatmaps\"");
        const nvinfer1::Dims in = engine_->getTensorShape(kInputName);  // -1 marks a dynamic axis
        if (in.nbDims != 4 || in.d[1] != 3 || in.d[2] != meta_.input_height || in.d[3] != meta_.input_width)
            throw Error(TARDIS_ERROR_MODEL, engine_path_ + ": input \"image\" has shape " + dims_str(in) +
                                                ", expected (N, 3, " + std::to_string(meta_.input_height) + ", " +
                                                std::to_string(meta_.input_width) + ") from " + meta_.source);
        static_batch_ = in.d[0] > 0;
        if (static_batch_) {
            max_batch_ = static_cast<int>(in.d[0]);
        } else {
            const nvinfer1::Dims max = engine_->getProfileShape(kInputName, 0, nvinfer1::OptProfileSelector::kMAX);
            max_batch_ = max.nbDims == 4 && max.d[0] > 0 ? static_cast<int>(max.d[0]) : 1;
        }
    }

    void infer(float* d_input, int batch) {
        const int k = meta_.num_keypoints();
        if (!context_->setInputShape(kInputName, nvinfer1::Dims4(batch, 3, meta_.input_height, meta_.input_width)))
            throw Error(TARDIS_ERROR_INFERENCE, engine_path_ + " refuses batch " + std::to_string(batch) + ": " +
                                                    logger_.last_error());
        set_address(kInputName, d_input);
        const size_t rows = static_cast<size_t>(batch) * k;
        if (heatmaps_) {
            const size_t plane = static_cast<size_t>(meta_.heatmap_height) * meta_.heatmap_width;
            check_output_shape(kOutputHeatmaps, rows * plane);
            set_address(kOutputHeatmaps, heatmaps_buf_.reserve(rows * plane * sizeof(float)));
        } else {
            check_output_shape(kOutputKeypoints, rows * 2);
            check_output_shape(kOutputScores, rows);
            set_address(kOutputKeypoints, keypoints_buf_.reserve(rows * 2 * sizeof(float)));
            set_address(kOutputScores, scores_buf_.reserve(rows * sizeof(float)));
        }
        if (!context_->enqueueV3(stream_.get()))
            throw Error(TARDIS_ERROR_INFERENCE, "TensorRT enqueueV3 failed on " + engine_path_ + ": " +
                                                    logger_.last_error());
    }

    void set_address(const char* name, void* address) {
        if (!context_->setTensorAddress(name, address))
            throw Error(TARDIS_ERROR_INFERENCE, "TensorRT setTensorAddress(\"" + std::string(name) +
                                                    "\") failed: " + logger_.last_error());
    }

    void check_output_shape(const char* name, size_t expected) {
        const nvinfer1::Dims d = context_->getTensorShape(name);
        size_t count = 1;
        for (int i = 0; i < d.nbDims; ++i) count *= d.d[i] > 0 ? static_cast<size_t>(d.d[i]) : 0;
        if (d.nbDims < 1 || count != expected)
            throw Error(TARDIS_ERROR_MODEL, engine_path_ + ": output \"" + name + "\" has shape " + dims_str(d) +
                                                ", which does not match the sizes in " + meta_.source);
    }

    // Decode (heatmap engines) and copy the first `count` rows to the host; waits for the stream.
    void collect(int count, float* keypoints_input, float* scores) {
        const int k = meta_.num_keypoints();
        const size_t rows = static_cast<size_t>(count) * k;
        if (heatmaps_ && meta_.decode_method == TARDIS_DECODE_DARK) {  // no DARK kernel: decode on the CPU
            const size_t floats = rows * meta_.heatmap_height * meta_.heatmap_width;
            host_heatmaps_.resize(floats);
            cuda_check(cudaMemcpyAsync(host_heatmaps_.data(), heatmaps_buf_.get(), floats * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_.get()),
                       "copying heatmaps to the host");
            cuda_check(cudaStreamSynchronize(stream_.get()), "TensorRT inference");
            decode_to_input_pixels(meta_, host_heatmaps_.data(), count, keypoints_input, scores);
            return;
        }
        if (heatmaps_) {
            cuda::decode_heatmaps(static_cast<const float*>(heatmaps_buf_.get()), count, k, meta_.heatmap_height,
                                  meta_.heatmap_width, meta_.decode_method, meta_.softargmax_beta,
                                  static_cast<float*>(keypoints_buf_.reserve(rows * 2 * sizeof(float))),
                                  static_cast<float*>(scores_buf_.reserve(rows * sizeof(float))), stream_.get());
        }
        cuda_check(cudaMemcpyAsync(keypoints_input, keypoints_buf_.get(), rows * 2 * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream_.get()),
                   "copying keypoints to the host");
        cuda_check(cudaMemcpyAsync(scores, scores_buf_.get(), rows * sizeof(float), cudaMemcpyDeviceToHost,
                                   stream_.get()),
                   "copying scores to the host");
        cuda_check(cudaStreamSynchronize(stream_.get()), "TensorRT inference");
        if (heatmaps_) {  // heatmap pixel u sits at input pixel stride * u
            for (size_t i = 0; i < rows * 2; ++i) keypoints_input[i] *= meta_.stride();
        }
    }

    struct StreamDeleter {
        void operator()(cudaStream_t s) const { cudaStreamDestroy(s); }
    };

    // Declaration order is destruction order reversed: the context goes before the engine, the runtime, the stream
    // they use and the logger they report to.
    Metadata meta_;
    int device_;
    std::string engine_path_;
    Logger logger_;
    std::unique_ptr<CUstream_st, StreamDeleter> stream_;
    std::unique_ptr<nvinfer1::IRuntime> runtime_;
    std::unique_ptr<nvinfer1::ICudaEngine> engine_;
    std::unique_ptr<nvinfer1::IExecutionContext> context_;
    bool heatmaps_ = false;
    bool static_batch_ = false;
    int max_batch_ = 1;
    DeviceBuffer src_, input_, heatmaps_buf_, keypoints_buf_, scores_buf_;
    std::vector<float> host_heatmaps_;
};

}  // namespace

std::unique_ptr<Backend> make_tensorrt_backend(const Metadata& meta, const std::string& engine_path,
                                               int cuda_device) {
    return std::make_unique<TensorRtBackend>(meta, engine_path, cuda_device);
}

}  // namespace tardis
