// The animal finder (multi-animal artifacts): a C++ mirror of tardis_edge/finder.py (decode_finder,
// find_animals), pinned to it by tests/test_finder.cpp. The finder graph sees the whole frame letterboxed to S x S
// (geometry.box_from_image: aspect kept, no padding) and outputs (3, S/stride, S/stride): channel 0 the animal-centre
// heatmap, channels 1-2 the box width and height as fractions of S.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend.hpp"
#include "geometry.hpp"
#include "metadata.hpp"

namespace tardis {

// One peak of the centre heatmap: centre and unpadded box size in finder-input pixels, and the peak value.
struct FinderPeak {
    double cx;
    double cy;
    double width;
    double height;
    double score;
};

// finder.decode_finder for one frame: `outputs` (3, h, w) float32 -> peaks strongest first (ties: row-major order),
// 3x3 local maxima above spec.min_score, a quarter-pixel step towards the higher neighbour, peaks within
// spec.min_distance output pixels of a stronger one dropped, at most `max_animals` (0: no limit).
std::vector<FinderPeak> decode_finder(const float* outputs, int height, int width, double stride, double min_score,
                                      int max_animals, double min_distance);

// An animal the finder found, image pixels: centre, unpadded box size (at least min_box) and peak score.
struct FoundAnimal {
    double cx;
    double cy;
    double width;
    double height;
    double score;

    // FoundAnimal.crop_box: aspect-corrected to the pose input and padded.
    CropBox crop_box(int input_w, int input_h, double padding) const {
        return box_from_center_size(cx, cy, width, height, input_w, input_h, padding);
    }
};

// The finder graph + decode (finder.find_animals for one frame).
class Finder {
public:
    // `max_animals` < 0: the artifact's finder.max_animals.
    Finder(const FinderSpec& spec, std::unique_ptr<Backend> backend, int max_animals);

    std::vector<FoundAnimal> find(const ImageView& image);
    int max_animals() const { return max_animals_; }

private:
    FinderSpec spec_;
    std::unique_ptr<Backend> backend_;
    int max_animals_;
    std::vector<float> outputs_;
};

}  // namespace tardis
