/*
 * tardis_edge.h — C API of the tardis-edge embedding library (C99 and C++).
 *
 * Runs an artifact folder written by `tardis-export` (model.json + ONNX graphs, or a TensorRT engine built from
 * them with trtexec) on camera frames and returns keypoints in image pixels.
 *
 * Conventions (the same as tardis_edge/geometry.py, which owns them):
 *   - pixel-centre coordinates: the centre of pixel (col, row) is the point (x, y) = (col, row);
 *   - a box is (x, y, width, height) with (x, y) its top-left edge (COCO); it is aspect-corrected to the network
 *     input and padded by model.json's `padding`; no box means the whole frame, aspect kept, no padding;
 *   - a keypoint whose score is <= 0 was not found: its coordinates are NaN.
 *
 * Errors: every function that can fail returns a tardis_status; the message of the last failure on the calling
 * thread is tardis_last_error(). No C++ exception crosses this boundary.
 *
 * Threads: a runner is not thread-safe; use one runner per thread (they may share nothing but the artifact).
 */
#ifndef TARDIS_EDGE_H
#define TARDIS_EDGE_H

#include <stddef.h>

#if defined(_WIN32)
#if defined(TARDIS_EDGE_BUILDING)
#define TARDIS_API __declspec(dllexport)
#else
#define TARDIS_API
#endif
#else
#define TARDIS_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define TARDIS_EDGE_VERSION_MAJOR 0
#define TARDIS_EDGE_VERSION_MINOR 2
#define TARDIS_EDGE_VERSION_PATCH 0

typedef enum tardis_status {
    TARDIS_OK = 0,
    TARDIS_ERROR_INVALID_ARGUMENT = 1,    /* NULL pointer, bad size, stride, box or index */
    TARDIS_ERROR_NOT_FOUND = 2,           /* artifact folder, model.json, ONNX or engine file missing */
    TARDIS_ERROR_BAD_METADATA = 3,        /* model.json unreadable, not JSON, or not a valid artifact */
    TARDIS_ERROR_BACKEND_UNAVAILABLE = 4, /* the backend was not compiled into this build */
    TARDIS_ERROR_MODEL = 5,               /* the model could not be loaded or does not match model.json */
    TARDIS_ERROR_INFERENCE = 6,           /* the backend failed while running */
    TARDIS_ERROR_UNSUPPORTED = 7,         /* a valid request this build cannot serve (e.g. decode method) */
    TARDIS_ERROR_OUT_OF_MEMORY = 8,
    TARDIS_ERROR_INTERNAL = 9,
    TARDIS_STATUS_MAX_ENUM_ = 0x7FFFFFFF /* not a status: makes every int a valid value of the type (C++ UB rule) */
} tardis_status;

typedef enum tardis_backend {
    TARDIS_BACKEND_AUTO = 0,       /* TensorRT when built and an engine exists, else OpenCV DNN */
    TARDIS_BACKEND_OPENCV_DNN = 1, /* CPU, reads the ONNX graph (the heatmap graph, decoded in C++) */
    TARDIS_BACKEND_TENSORRT = 2,   /* GPU, reads a serialized engine built by trtexec */
    TARDIS_BACKEND_MAX_ENUM_ = 0x7FFFFFFF
} tardis_backend;

typedef enum tardis_pixel_format {
    TARDIS_PIXEL_RGB8 = 0, /* 3 bytes per pixel, R G B */
    TARDIS_PIXEL_BGR8 = 1, /* 3 bytes per pixel, B G R (OpenCV's cv::Mat order) */
    TARDIS_PIXEL_MAX_ENUM_ = 0x7FFFFFFF
} tardis_pixel_format;

typedef enum tardis_decode_method {
    TARDIS_DECODE_ARGMAX = 0,     /* integer peak; ties resolve to the first maximum in row-major order */
    TARDIS_DECODE_MSRA = 1,       /* peak + quarter-pixel step toward the higher neighbour */
    TARDIS_DECODE_DARK = 2,       /* peak + Newton step on the blurred log-heatmap (DARK) */
    TARDIS_DECODE_SOFT_ARGMAX = 3, /* expectation under softmax(beta * heatmap) */
    TARDIS_DECODE_MAX_ENUM_ = 0x7FFFFFFF
} tardis_decode_method;

/* An 8-bit, 3-channel image in caller memory; rows are `stride_bytes` apart (>= 3 * width). */
typedef struct tardis_image {
    const unsigned char* data;
    int width;
    int height;
    size_t stride_bytes;
    tardis_pixel_format format;
} tardis_image;

/* A box in image pixels: (x, y) is its top-left edge, (width, height) its size (COCO xywh). */
typedef struct tardis_box {
    float x;
    float y;
    float width;
    float height;
} tardis_box;

typedef struct tardis_runner_options {
    tardis_backend backend;  /* TARDIS_BACKEND_AUTO by default */
    const char* precision;   /* key of model.json's `models`; NULL: "fp32" */
    const char* engine_path; /* TensorRT engine; NULL: <artifact>/<ONNX file stem>.engine */
    int cuda_device;         /* CUDA device for TensorRT; 0 by default */
} tardis_runner_options;

typedef struct tardis_runner tardis_runner;

/* ---- errors and build information ---------------------------------------------------------------------------- */

/* The message of the last failure on this thread ("" if none); valid until the next failing call on this thread. */
TARDIS_API const char* tardis_last_error(void);
/* A constant name for a status, e.g. "TARDIS_ERROR_NOT_FOUND". */
TARDIS_API const char* tardis_status_name(tardis_status status);
/* "major.minor.patch" of the library. */
TARDIS_API const char* tardis_version(void);
/* 1 if `backend` was compiled into this build (AUTO: 1 if any was), else 0. */
TARDIS_API int tardis_backend_available(tardis_backend backend);
/* "auto", "opencv-dnn" or "tensorrt". */
TARDIS_API const char* tardis_backend_name(tardis_backend backend);

/* ---- runner ---------------------------------------------------------------------------------------------------- */

/* Fill `options` with the defaults (AUTO backend, fp32, engine next to the ONNX file, CUDA device 0). */
TARDIS_API void tardis_runner_options_init(tardis_runner_options* options);

/* Load the artifact folder `artifact_dir` (model.json + models). `options` may be NULL for the defaults.
 * On success *out_runner owns the model; free it with tardis_runner_destroy. On failure *out_runner is NULL. */
TARDIS_API tardis_status tardis_runner_create(const char* artifact_dir, const tardis_runner_options* options,
                                              tardis_runner** out_runner);
/* Free a runner (NULL is allowed). */
TARDIS_API void tardis_runner_destroy(tardis_runner* runner);

/* Number of keypoints K per detection (0 for NULL). */
TARDIS_API int tardis_runner_num_keypoints(const tardis_runner* runner);
/* Name of keypoint `index` from model.json (NULL if out of range). */
TARDIS_API const char* tardis_runner_keypoint_name(const tardis_runner* runner, int index);
/* The backend the runner actually uses (never AUTO). */
TARDIS_API tardis_backend tardis_runner_backend(const tardis_runner* runner);

/* One crop of `image`: `box` (NULL: the whole frame) -> keypoints_xy[K * 2] (x, y image pixels), scores[K]. */
TARDIS_API tardis_status tardis_runner_run(tardis_runner* runner, const tardis_image* image, const tardis_box* box,
                                           float* keypoints_xy, float* scores);
/* `num_boxes` crops of one image in one batch (e.g. several animals): keypoints_xy[num_boxes * K * 2],
 * scores[num_boxes * K], in the order of `boxes`. */
TARDIS_API tardis_status tardis_runner_run_boxes(tardis_runner* runner, const tardis_image* image,
                                                 const tardis_box* boxes, int num_boxes, float* keypoints_xy,
                                                 float* scores);

/* ---- many animals: find, pose and track every animal ---------------------------------------------------------- */

/* An artifact exported from multi-animal training has an animal finder (model.json's "finder"): a tardis_multi runs
 * it with the pose model of a runner, frame by frame, and links the animals into tracks, exactly as the Python
 * runtime does (tardis_edge.runtime.multi.open_multi: tardis_edge.multi.MultiAnimalPredictor +
 * tardis_edge.tracking.Tracker):
 *   1. boxes: the finder on the whole frame every `detect_every` frames and whenever fewer than `expected_animals`
 *      are held (held animals no found box overlaps are kept); in between, each animal's box from its last pose;
 *   2. pose on every box, then on the box around each pose's confident keypoints (the refine pass);
 *   3. duplicates (two boxes on one animal) and poses with fewer than `min_keypoints` confident keypoints dropped;
 *      at most `max_animals`, strongest first;
 *   4. tracking: each pose gets the identity of the track whose motion-predicted keypoints it matches best (OKS and
 *      box IoU, one optimal assignment per frame); with a known number of animals the ids stay in
 *      0 .. max_animals - 1 and a lost animal is re-identified by position.
 * A tardis_multi holds one video's state: call tardis_multi_reset before the next video. */

typedef struct tardis_multi tardis_multi;

typedef struct tardis_multi_options {
    size_t struct_size;           /* sizeof(tardis_multi_options), set by tardis_multi_options_init: a library newer
                                     than the caller's header reads only the fields the caller knows */
    int max_animals;              /* most animals per frame; -1: the artifact's finder.max_animals (the most seen in
                                     one training frame); 0: no limit */
    int detect_every;             /* run the finder every N frames (1: every frame); pose-derived boxes in between */
    int expected_animals;         /* run the finder on every frame holding fewer animals; -1: max_animals; 0: off */
    const char* finder_precision; /* key of finder.models; NULL: the runner's precision ("int8": int8_cpu on OpenCV
                                     DNN, int8_qdq on TensorRT) */
    int min_keypoints;            /* an animal needs this many confident keypoints (score > 0.2), else it is lost */
    double duplicate_distance;    /* two poses closer than this x the animal's size (median keypoint distance) are
                                     one animal */
    double keep_iou;              /* a held animal's box overlapping every found box by less than this IoU is kept */
    int refine_tracked;           /* 1: the refine pass also on frames without a finder run; 0: one pose pass in the
                                     held box there (about half the pose cost, as mmdeploy's PoseTracker) */
    /* tracking (tardis_edge.tracking.TrackerConfig; defaults are Python's) */
    int track;                    /* 1: assign track ids; 0: every track_id is -1 */
    double min_keypoint_score;    /* keypoints scored at or below this are ignored for matching and motion (0.2) */
    double min_similarity;        /* a pose joins a track only with a similarity of at least this (0.3) */
    double oks_weight;            /* weight of the keypoint similarity (OKS) against the track's prediction (1) */
    double iou_weight;            /* weight of the box IoU (0.5) */
    int use_motion;               /* 1: predict each track's keypoints with a constant-velocity model; 0: last pose */
    double position_gain;         /* alpha-beta filter: share of the residual taken into the position (0.7) */
    double velocity_rigidity;     /* 0: each keypoint moves with its own velocity; 1: all with their mean (0.5) */
    double velocity_gain;         /* alpha-beta filter: share of the residual per frame taken into the velocity (0.3) */
    int motion_horizon;           /* frames a lost track's prediction extrapolates (10) */
    double lost_scale_growth;     /* a lost track's OKS scale widens by this fraction per frame lost (0.1) */
    double ambiguity_margin;      /* two matches this close to their exchange coast on motion (0.05; 0: off) */
    int max_age;                  /* frames a track may go unmatched and still be re-identified (30) */
    int new_track_after;          /* frames an unmatched pose must be seen before it becomes a track (1) */
    int smooth;                   /* 1: one-euro filter on the output keypoints of tracked animals (0) */
    double fps;                   /* frame rate of frame_index, for the one-euro filter (30) */
    double min_cutoff;            /* one-euro cutoff at rest, Hz (1) */
    double beta;                  /* one-euro cutoff increase (Hz) per px/s of speed (0.2) */
    double d_cutoff;              /* one-euro cutoff of the speed estimate, Hz (1) */
} tardis_multi_options;

/* One animal of a frame. Its keypoints are row `index` of the keypoints_xy / scores arrays of the same call. */
typedef struct tardis_animal {
    int track_id;   /* identity (0 .. max_animals - 1 with a known number of animals); -1: not tracked (tracking
                       off, a pose beyond max_animals, or a new animal not yet confirmed) */
    float score;    /* instance score: the mean keypoint score clipped to [0, 1] */
    tardis_box box; /* the crop box its pose was predicted in (padded, the pose input's aspect), image pixels */
} tardis_animal;

/* What happened on the last frame tardis_multi_process saw. */
typedef struct tardis_multi_frame {
    int frame_index;
    int detected;    /* 1: the finder ran on this frame */
    int num_animals; /* poses of the frame (the `count` of tardis_multi_process) */
    int num_tracked; /* of which with a track id >= 0 */
    int num_dropped; /* animals found beyond max_animals (by the predictor or the tracker) */
} tardis_multi_frame;

/* Fill `options` with the defaults of tardis_edge.runtime.multi.open_multi (and TrackerConfig). */
TARDIS_API void tardis_multi_options_init(tardis_multi_options* options);

/* 1 if the runner's artifact has an animal finder (model.json "finder"), else 0. */
TARDIS_API int tardis_runner_has_finder(const tardis_runner* runner);

/* Multi-animal pose + tracking with `runner`'s pose model and its artifact's finder (on the runner's backend). The
 * runner is borrowed: it must outlive the tardis_multi, and is not to be used elsewhere meanwhile (one thread).
 * A runner whose artifact has no finder: TARDIS_ERROR_UNSUPPORTED. `options` may be NULL for the defaults. */
TARDIS_API tardis_status tardis_multi_create(tardis_runner* runner, const tardis_multi_options* options,
                                             tardis_multi** out_multi);
/* Free a tardis_multi (NULL is allowed); the runner stays. */
TARDIS_API void tardis_multi_destroy(tardis_multi* multi);
/* Forget the held animals and every track (a new video, or a cut). */
TARDIS_API tardis_status tardis_multi_reset(tardis_multi* multi);
/* The most animals one frame can return (the max_animals in use; 0: no limit). */
TARDIS_API int tardis_multi_max_animals(const tardis_multi* multi);

/* The animals of the next frame of the video. `frame_index` must grow from call to call (gaps are allowed: motion
 * is per frame index); a negative value means the last call's + 1 (0 on the first call).
 * Outputs, `capacity` rows each: animals[capacity], keypoints_xy[capacity * K * 2] (x, y image pixels, NaN where
 * not found), scores[capacity * K]; *count receives the number of animals, strongest first.
 * With more animals than `capacity` the frame is still processed (the tracks move on), nothing is written but
 * *count, and the call returns TARDIS_ERROR_INVALID_ARGUMENT: read the frame with tardis_multi_results and a larger
 * capacity (capacity >= tardis_multi_max_animals() always suffices when that is > 0). The output pointers may be NULL
 * when capacity is 0. */
TARDIS_API tardis_status tardis_multi_process(tardis_multi* multi, const tardis_image* image, int frame_index,
                                              tardis_animal* animals, float* keypoints_xy, float* scores,
                                              int capacity, int* count);
/* The animals of the last processed frame again (same layout and capacity rule as tardis_multi_process). */
TARDIS_API tardis_status tardis_multi_results(const tardis_multi* multi, tardis_animal* animals, float* keypoints_xy,
                                              float* scores, int capacity, int* count);
/* What happened on the last processed frame (all zero before the first). */
TARDIS_API tardis_status tardis_multi_last_frame(const tardis_multi* multi, tardis_multi_frame* info);

/* ---- building blocks (for custom inference backends) ---------------------------------------------------------- */

/* The (2, 3) row-major affine mapping image pixels to network-input pixels for a crop, exactly as
 * tardis_edge.geometry.crop_affine(box_from_xywh(box, input, padding)) or, for box == NULL,
 * crop_affine(box_from_image(image, input)). */
TARDIS_API tardis_status tardis_crop_affine(int image_width, int image_height, const tardis_box* box,
                                            float padding, int input_width, int input_height, double affine[6]);

/* Bilinear warp of `src` through `affine` (image -> output pixels) into a `out_width` x `out_height` 3-channel
 * image in the same channel order, constant border 0 (matches cv2.warpAffine INTER_LINEAR, BORDER_CONSTANT to
 * within one grey level). `out` rows are `out_stride_bytes` apart. */
TARDIS_API tardis_status tardis_warp_affine(const tardis_image* src, const double affine[6], int out_width,
                                            int out_height, unsigned char* out, size_t out_stride_bytes);

/* Decode `heatmaps` (N, K, H, W) float32, row-major, into keypoints_xy (N, K, 2) in heatmap pixels and
 * scores (N, K) (the heatmap maxima), exactly as tardis_edge.decode: rows with score <= 0 are (-1, -1) for
 * argmax/msra/dark; soft-argmax reports the expectation for every row. `beta` is used by soft-argmax only. */
TARDIS_API tardis_status tardis_decode_heatmaps(const float* heatmaps, int n, int k, int height, int width,
                                                tardis_decode_method method, float beta, float* keypoints_xy,
                                                float* scores);

#ifdef __cplusplus
}
#endif

#endif /* TARDIS_EDGE_H */
