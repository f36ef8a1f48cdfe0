/* C API error paths, compiled as strict C99 against tardis_edge.h and linked to the shared library the way an
 * embedding program uses it. Every failure must return its status and a message that names the problem.
 *
 * usage: test_c_api <fixtures_dir> [<artifact_dir>]
 *   fixtures_dir: cpp/tests/fixtures (broken model.json files);
 *   artifact_dir: a loadable artifact (the tiny one) for the run-time checks, when a backend is built. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tardis_edge.h"

static int failures = 0;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond); \
            ++failures;                                                        \
        }                                                                      \
    } while (0)

/* `status` is `want` and the last error mentions `needle`. */
static void expect(tardis_status status, tardis_status want, const char* needle, const char* what) {
    if (status != want) {
        fprintf(stderr, "FAILED: %s: got %s (%s), want %s\n", what, tardis_status_name(status), tardis_last_error(),
                tardis_status_name(want));
        ++failures;
        return;
    }
    if (needle && !strstr(tardis_last_error(), needle)) {
        fprintf(stderr, "FAILED: %s: message \"%s\" does not mention \"%s\"\n", what, tardis_last_error(), needle);
        ++failures;
    }
}

static void expect_create(const char* dir, tardis_status want, const char* needle) {
    tardis_runner* runner = (tardis_runner*)1; /* must be reset to NULL on failure */
    char path[4096];
    snprintf(path, sizeof path, "%s", dir);
    expect(tardis_runner_create(path, NULL, &runner), want, needle, dir);
    CHECK(runner == NULL);
    tardis_runner_destroy(runner);
}

static void test_create_errors(const char* fixtures) {
    char dir[4096];
    tardis_runner* runner = NULL;
    expect(tardis_runner_create(NULL, NULL, &runner), TARDIS_ERROR_INVALID_ARGUMENT, "artifact_dir is NULL", "NULL");
    expect(tardis_runner_create(fixtures, NULL, NULL), TARDIS_ERROR_INVALID_ARGUMENT, "out_runner is NULL", "NULL out");

    snprintf(dir, sizeof dir, "%s/does_not_exist", fixtures);
    expect_create(dir, TARDIS_ERROR_NOT_FOUND, "does_not_exist not found");
    expect_create(fixtures, TARDIS_ERROR_NOT_FOUND, "model.json not found"); /* a folder without model.json */
    snprintf(dir, sizeof dir, "%s/bad_json", fixtures);
    expect_create(dir, TARDIS_ERROR_BAD_METADATA, "is not valid JSON (line 1, column 63");
    snprintf(dir, sizeof dir, "%s/not_artifact", fixtures);
    expect_create(dir, TARDIS_ERROR_BAD_METADATA, "is not a tardis-edge artifact (format=\"dlc-project\"");
    snprintf(dir, sizeof dir, "%s/newer_version", fixtures);
    expect_create(dir, TARDIS_ERROR_BAD_METADATA, "format_version 99, newer than this library's 1; upgrade");
    snprintf(dir, sizeof dir, "%s/bad_decode", fixtures);
    expect_create(dir, TARDIS_ERROR_BAD_METADATA, "unknown decode_method \"gauss\"");
    snprintf(dir, sizeof dir, "%s/bad_stride", fixtures);
    expect_create(dir, TARDIS_ERROR_BAD_METADATA, "heatmap size 60x64 does not divide input size 256x256");
    snprintf(dir, sizeof dir, "%s/no_models", fixtures);
    expect_create(dir, TARDIS_ERROR_BAD_METADATA, "\"models\" is empty");
    snprintf(dir, sizeof dir, "%s/softargmax_without_beta", fixtures);
    expect_create(dir, TARDIS_ERROR_BAD_METADATA, "softargmax_beta\" is missing");

    /* A valid model.json whose ONNX file is absent: NOT_FOUND from a built backend, else BACKEND_UNAVAILABLE. */
    snprintf(dir, sizeof dir, "%s/missing_onnx", fixtures);
    if (tardis_backend_available(TARDIS_BACKEND_OPENCV_DNN)) {
        expect_create(dir, TARDIS_ERROR_NOT_FOUND, "tardis_fp32_heatmaps.onnx not found");
    } else {
        expect_create(dir, TARDIS_ERROR_BACKEND_UNAVAILABLE, "no inference backend was built into this library");
    }
    {
        tardis_runner_options options;
        tardis_runner_options_init(&options);
        CHECK(options.backend == TARDIS_BACKEND_AUTO && options.precision == NULL && options.engine_path == NULL);
        options.precision = "int8";
        if (tardis_backend_available(TARDIS_BACKEND_OPENCV_DNN)) {
            options.backend = TARDIS_BACKEND_OPENCV_DNN;
            expect(tardis_runner_create(dir, &options, &runner), TARDIS_ERROR_INVALID_ARGUMENT,
                   "precision \"int8\" has no ONNX graph", "unknown precision");
        }
        options.backend = TARDIS_BACKEND_TENSORRT;
        options.precision = NULL;
        if (!tardis_backend_available(TARDIS_BACKEND_TENSORRT)) {
            expect(tardis_runner_create(dir, &options, &runner), TARDIS_ERROR_BACKEND_UNAVAILABLE,
                   "the TensorRT backend was not built into this library", "TensorRT not built");
        } else {
            expect(tardis_runner_create(dir, &options, &runner), TARDIS_ERROR_NOT_FOUND, "trtexec", "no engine");
        }
        options.backend = (tardis_backend)42;
        expect(tardis_runner_create(dir, &options, &runner), TARDIS_ERROR_INVALID_ARGUMENT, "unknown backend 42",
               "bad backend");
    }
}

static void test_run_errors(const char* artifact) {
    tardis_runner* runner = NULL;
    unsigned char pixels[64 * 48 * 3];
    float keypoints[64], scores[32];
    tardis_image image;
    tardis_box box;
    int k;

    memset(pixels, 128, sizeof pixels);
    image.data = pixels;
    image.width = 64;
    image.height = 48;
    image.stride_bytes = 64 * 3;
    image.format = TARDIS_PIXEL_RGB8;
    expect(tardis_runner_run(NULL, &image, NULL, keypoints, scores), TARDIS_ERROR_INVALID_ARGUMENT, "runner is NULL",
           "NULL runner");
    if (!artifact) return;

    expect(tardis_runner_create(artifact, NULL, &runner), TARDIS_OK, NULL, "create the test artifact's runner");
    if (!runner) return;
    k = tardis_runner_num_keypoints(runner);
    CHECK(k > 0 && k <= 32); /* the buffers below hold 32 keypoints */
    CHECK(tardis_runner_keypoint_name(runner, 0) != NULL && tardis_runner_keypoint_name(runner, k) == NULL);
    CHECK(tardis_runner_keypoint_name(runner, -1) == NULL);
    CHECK(tardis_runner_backend(runner) != TARDIS_BACKEND_AUTO);

    image.stride_bytes = 100;
    expect(tardis_runner_run(runner, &image, NULL, keypoints, scores), TARDIS_ERROR_INVALID_ARGUMENT,
           "image stride 100 bytes is smaller than 3 * width = 192", "bad stride");
    image.stride_bytes = 64 * 3;
    image.width = 0;
    expect(tardis_runner_run(runner, &image, NULL, keypoints, scores), TARDIS_ERROR_INVALID_ARGUMENT,
           "image size 0x48 must be positive", "zero width");
    image.width = 64;
    image.data = NULL;
    expect(tardis_runner_run(runner, &image, NULL, keypoints, scores), TARDIS_ERROR_INVALID_ARGUMENT,
           "image.data is NULL", "NULL data");
    image.data = pixels;
    image.format = (tardis_pixel_format)7;
    expect(tardis_runner_run(runner, &image, NULL, keypoints, scores), TARDIS_ERROR_INVALID_ARGUMENT,
           "image format 7", "bad format");
    image.format = TARDIS_PIXEL_RGB8;
    expect(tardis_runner_run(runner, &image, NULL, NULL, scores), TARDIS_ERROR_INVALID_ARGUMENT,
           "must not be NULL", "NULL outputs");
    box.x = 10.0f;
    box.y = 5.0f;
    box.width = -3.0f;
    box.height = 20.0f;
    expect(tardis_runner_run(runner, &image, &box, keypoints, scores), TARDIS_ERROR_INVALID_ARGUMENT,
           "non-negative width and height", "negative box");
    box.width = 30.0f;
    expect(tardis_runner_run_boxes(runner, &image, &box, 0, keypoints, scores), TARDIS_ERROR_INVALID_ARGUMENT,
           "num_boxes is 0", "no boxes");
    expect(tardis_runner_run_boxes(runner, &image, NULL, 1, keypoints, scores), TARDIS_ERROR_INVALID_ARGUMENT,
           "boxes is NULL", "NULL boxes");

    /* After the errors the runner still works: a flat grey frame gives K finite-or-NaN keypoints. */
    expect(tardis_runner_run(runner, &image, &box, keypoints, scores), TARDIS_OK, NULL, "run after errors");
    {
        int j;
        for (j = 0; j < k; ++j) CHECK(scores[j] > 0 ? !isnan(keypoints[2 * j]) : isnan(keypoints[2 * j]));
    }
    tardis_runner_destroy(runner);
}

/* The multi-animal calls from C: defaults, NULL arguments, and a single-animal artifact (no finder). */
static void test_multi_errors(const char* artifact) {
    tardis_multi_options options;
    tardis_multi* multi = (tardis_multi*)1; /* must be reset to NULL on failure */
    tardis_runner* runner = NULL;
    int count = -1;

    memset(&options, 0xff, sizeof options);
    tardis_multi_options_init(&options);
    CHECK(options.struct_size == sizeof options && options.max_animals == -1 && options.detect_every == 1);
    CHECK(options.expected_animals == -1 && options.finder_precision == NULL && options.track == 1);
    CHECK(options.min_similarity == 0.3 && options.max_age == 30 && options.smooth == 0);
    tardis_multi_options_init(NULL); /* no crash */
    expect(tardis_multi_create(NULL, &options, &multi), TARDIS_ERROR_INVALID_ARGUMENT, "runner is NULL", "multi NULL");
    CHECK(multi == NULL);
    expect(tardis_multi_process(NULL, NULL, 0, NULL, NULL, NULL, 0, &count), TARDIS_ERROR_INVALID_ARGUMENT,
           "multi is NULL", "process NULL");
    CHECK(count == 0);
    CHECK(tardis_runner_has_finder(NULL) == 0 && tardis_multi_max_animals(NULL) == 0);
    tardis_multi_destroy(NULL);
    if (!artifact) return;
    expect(tardis_runner_create(artifact, NULL, &runner), TARDIS_OK, NULL, "create the test artifact's runner");
    if (!runner) return;
    if (!tardis_runner_has_finder(runner)) { /* the tiny single-animal artifact (TARDIS_TEST_ARTIFACT may have one) */
        expect(tardis_multi_create(runner, NULL, &multi), TARDIS_ERROR_UNSUPPORTED, "has no animal finder",
               "no finder");
        CHECK(multi == NULL);
    }
    tardis_runner_destroy(runner);
}

int main(int argc, char** argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s <fixtures_dir> [<artifact_dir>]\n", argv[0]);
        return 2;
    }
    CHECK(strcmp(tardis_status_name(TARDIS_ERROR_NOT_FOUND), "TARDIS_ERROR_NOT_FOUND") == 0);
    CHECK(strcmp(tardis_backend_name(TARDIS_BACKEND_TENSORRT), "tensorrt") == 0);
    CHECK(strlen(tardis_version()) >= 5);
    CHECK(tardis_backend_available(TARDIS_BACKEND_AUTO) ==
          (tardis_backend_available(TARDIS_BACKEND_OPENCV_DNN) || tardis_backend_available(TARDIS_BACKEND_TENSORRT)));
    test_create_errors(argv[1]);
    test_run_errors(argc == 3 ? argv[2] : NULL);
    test_multi_errors(argc == 3 ? argv[2] : NULL);
    if (failures) {
        fprintf(stderr, "test_c_api: %d check(s) failed\n", failures);
        return 1;
    }
    printf("test_c_api: all checks passed\n");
    return 0;
}
