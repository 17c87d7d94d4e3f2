// JPEG and PNG through Debian's libjpeg-turbo and libpng, behind an interface that cannot exit,
// abort or longjmp into Swift: every failure returns a status and a message. Decoded images are
// 8-bit RGB, interleaved, row-major, as PIL's `Image.convert("RGB")` gives them (grey expanded,
// alpha dropped, palette applied, 16-bit reduced to the high byte, Adobe CMYK inverted and
// converted with PIL's formula).
#ifndef AMBER_CODECS_H
#define AMBER_CODECS_H

#include <stddef.h>

typedef struct {
    unsigned char *pixels;   // width * height * 3 bytes, malloc'd; release with amber_codecs_free
    int width;
    int height;
} amber_rgb_image;

enum {
    AMBER_CODEC_OK = 0,
    AMBER_CODEC_CORRUPT = 1,        // not decodable: bad or truncated data
    AMBER_CODEC_TOO_LARGE = 2,      // more pixels than allowed (decompression-bomb guard)
    AMBER_CODEC_UNSUPPORTED = 3,    // a valid file of a kind this decoder does not take
    AMBER_CODEC_OUT_OF_MEMORY = 4,
};

/// Decodes a JPEG held in memory. `max_pixels` bounds width × height before any pixel memory is
/// allocated; `max_scans` bounds the scans of a progressive file (a CPU-exhaustion guard).
int amber_jpeg_decode(const unsigned char *data, size_t size, size_t max_pixels, int max_scans,
                      amber_rgb_image *out, char *message, size_t message_size);

/// Decodes a PNG held in memory (any bit depth and colour type, interlaced or not).
int amber_png_decode(const unsigned char *data, size_t size, size_t max_pixels,
                     amber_rgb_image *out, char *message, size_t message_size);

/// Encodes interleaved 8-bit RGB as a baseline JPEG (quality 1…100) into malloc'd memory.
int amber_jpeg_encode(const unsigned char *rgb, int width, int height, int quality,
                      unsigned char **out, size_t *out_size, char *message, size_t message_size);

void amber_codecs_free(void *pointer);

#endif
