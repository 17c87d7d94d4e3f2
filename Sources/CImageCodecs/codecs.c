// See amber_codecs.h. libjpeg and libpng report fatal errors by calling a handler that must not
// return; here the handler longjmps back to the entry point, which frees what it allocated and
// returns a status. Nothing crosses into Swift but a status, a message and a malloc'd buffer.
#include "amber_codecs.h"

#include <limits.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

void amber_codecs_free(void *pointer) { free(pointer); }

static void set_message(char *message, size_t size, const char *text) {
    if (message && size > 0) snprintf(message, size, "%s", text);
}

// MARK: JPEG

typedef struct {
    struct jpeg_error_mgr base;
    jmp_buf jump;
    char *message;
    size_t message_size;
    volatile int status;   // set before a longjmp, read after it
    int max_scans;
} jpeg_failure;

static void jpeg_fail(j_common_ptr cinfo) {
    jpeg_failure *failure = (jpeg_failure *)cinfo->err;
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    set_message(failure->message, failure->message_size, text);
    if (failure->status == AMBER_CODEC_OK) failure->status = AMBER_CODEC_CORRUPT;
    longjmp(failure->jump, 1);
}

// Warnings are tolerated as PIL tolerates them (extraneous bytes, a bad Huffman code that
// libjpeg recovers from), except the end of the data before the end of the image: that is a
// truncated file, which PIL refuses too ("image file is truncated").
static void jpeg_message(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        jpeg_failure *failure = (jpeg_failure *)cinfo->err;
        set_message(failure->message, failure->message_size,
                    "truncated: the data ends before the image does");
        failure->status = AMBER_CODEC_CORRUPT;
        longjmp(failure->jump, 1);
    }
}

static void jpeg_progress(j_common_ptr cinfo) {
    if (!cinfo->is_decompressor) return;
    j_decompress_ptr decompressor = (j_decompress_ptr)cinfo;
    jpeg_failure *failure = (jpeg_failure *)cinfo->err;
    if (decompressor->input_scan_number > failure->max_scans) {
        char text[96];
        snprintf(text, sizeof text, "a progressive JPEG with more than %d scans", failure->max_scans);
        set_message(failure->message, failure->message_size, text);
        failure->status = AMBER_CODEC_TOO_LARGE;
        longjmp(failure->jump, 1);
    }
}

// PIL: Adobe CMYK is stored inverted ("CMYK;I"); RGB = (255 − K) − C·(255 − K)/255, rounded.
static unsigned char cmyk_channel(int c, int nk) {
    int tmp = c * nk + 128;
    int product = ((tmp >> 8) + tmp) >> 8;
    int value = nk - product;
    return (unsigned char)(value < 0 ? 0 : value > 255 ? 255 : value);
}

int amber_jpeg_decode(const unsigned char *data, size_t size, size_t max_pixels, int max_scans,
                      amber_rgb_image *out, char *message, size_t message_size) {
    struct jpeg_decompress_struct cinfo;
    jpeg_failure failure;
    struct jpeg_progress_mgr progress;
    unsigned char *volatile pixels = NULL;
    unsigned char *volatile cmyk_row = NULL;
    memset(&cinfo, 0, sizeof cinfo);
    memset(&failure, 0, sizeof failure);
    memset(&progress, 0, sizeof progress);
    memset(out, 0, sizeof *out);
    if (size == 0 || size > ULONG_MAX) {
        set_message(message, message_size, size == 0 ? "empty" : "too many bytes");
        return size == 0 ? AMBER_CODEC_CORRUPT : AMBER_CODEC_TOO_LARGE;
    }
    cinfo.err = jpeg_std_error(&failure.base);
    failure.base.error_exit = jpeg_fail;
    failure.base.emit_message = jpeg_message;
    failure.message = message;
    failure.message_size = message_size;
    failure.max_scans = max_scans;
    if (setjmp(failure.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        free(cmyk_row);
        return failure.status;
    }
    jpeg_create_decompress(&cinfo);
    progress.progress_monitor = jpeg_progress;
    cinfo.progress = &progress;
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    size_t width = cinfo.image_width, height = cinfo.image_height;
    if (width == 0 || height == 0 || width * height > max_pixels) {
        char text[128];
        snprintf(text, sizeof text, "%zu × %zu pixels, more than the %zu allowed", width, height, max_pixels);
        set_message(message, message_size, text);
        failure.status = AMBER_CODEC_TOO_LARGE;
        longjmp(failure.jump, 1);
    }
    int cmyk = 0;
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
        cinfo.out_color_space = JCS_RGB;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        cinfo.out_color_space = JCS_CMYK;
        cmyk = 1;
        break;
    default: {
        char text[96];
        snprintf(text, sizeof text, "a JPEG with %d colour components of an unknown colour space", cinfo.num_components);
        set_message(message, message_size, text);
        failure.status = AMBER_CODEC_UNSUPPORTED;
        longjmp(failure.jump, 1);
    }
    }
    jpeg_start_decompress(&cinfo);
    pixels = malloc(width * height * 3);
    if (cmyk) cmyk_row = malloc(width * 4);
    if (!pixels || (cmyk && !cmyk_row)) {
        set_message(message, message_size, "out of memory");
        failure.status = AMBER_CODEC_OUT_OF_MEMORY;
        longjmp(failure.jump, 1);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        unsigned char *target = pixels + (size_t)cinfo.output_scanline * width * 3;
        JSAMPROW row = cmyk ? cmyk_row : target;
        if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) {
            set_message(message, message_size, "truncated: the data ends before the image does");
            failure.status = AMBER_CODEC_CORRUPT;
            longjmp(failure.jump, 1);
        }
        if (cmyk) {
            for (size_t x = 0; x < width; x++) {
                const unsigned char *p = cmyk_row + 4 * x;
                int nk = p[3];   // inverted K: 255 − K
                target[3 * x] = cmyk_channel(255 - p[0], nk);
                target[3 * x + 1] = cmyk_channel(255 - p[1], nk);
                target[3 * x + 2] = cmyk_channel(255 - p[2], nk);
            }
        }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(cmyk_row);
    out->pixels = pixels;
    out->width = (int)width;
    out->height = (int)height;
    return AMBER_CODEC_OK;
}

int amber_jpeg_encode(const unsigned char *rgb, int width, int height, int quality,
                      unsigned char **out, size_t *out_size, char *message, size_t message_size) {
    struct jpeg_compress_struct cinfo;
    jpeg_failure failure;
    // libjpeg's memory destination mallocs the output and keeps this pointer to it current
    // (also across its reallocations), so an error mid-way frees it here.
    unsigned char *volatile destination = NULL;
    unsigned long volatile length = 0;
    memset(&cinfo, 0, sizeof cinfo);
    memset(&failure, 0, sizeof failure);
    *out = NULL;
    *out_size = 0;
    if (width <= 0 || height <= 0 || width > 65500 || height > 65500 || quality < 1 || quality > 100) {
        set_message(message, message_size, "width and height must be 1…65500 and quality 1…100");
        return AMBER_CODEC_UNSUPPORTED;
    }
    cinfo.err = jpeg_std_error(&failure.base);
    failure.base.error_exit = jpeg_fail;
    failure.message = message;
    failure.message_size = message_size;
    if (setjmp(failure.jump)) {
        jpeg_destroy_compress(&cinfo);
        free(destination);
        return failure.status == AMBER_CODEC_OK ? AMBER_CODEC_CORRUPT : failure.status;
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, (unsigned char **)&destination, (unsigned long *)&length);
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = 3;
    cinfo.in_color_space = JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    cinfo.optimize_coding = TRUE;
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)cinfo.next_scanline * (size_t)width * 3);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    *out = destination;
    *out_size = length;
    return AMBER_CODEC_OK;
}

// MARK: PNG

typedef struct {
    const unsigned char *data;
    size_t size;
    size_t position;
    char *message;
    size_t message_size;
    volatile int status;   // set before a longjmp, read after it
} png_reader;

static void png_fail(png_structp png, png_const_charp text) {
    png_reader *reader = (png_reader *)png_get_error_ptr(png);
    if (reader->status == AMBER_CODEC_OK) {
        set_message(reader->message, reader->message_size, text);
        reader->status = AMBER_CODEC_CORRUPT;
    }
    png_longjmp(png, 1);
}

static void png_warn(png_structp png, png_const_charp text) {
    (void)png;
    (void)text;
}

static void png_read_bytes(png_structp png, png_bytep target, size_t count) {
    png_reader *reader = (png_reader *)png_get_io_ptr(png);
    if (count > reader->size - reader->position) {
        set_message(reader->message, reader->message_size, "truncated: the data ends before the image does");
        reader->status = AMBER_CODEC_CORRUPT;
        png_longjmp(png, 1);
    }
    memcpy(target, reader->data + reader->position, count);
    reader->position += count;
}

int amber_png_decode(const unsigned char *data, size_t size, size_t max_pixels,
                     amber_rgb_image *out, char *message, size_t message_size) {
    png_reader reader = {data, size, 0, message, message_size, AMBER_CODEC_OK};
    png_structp png = NULL;
    png_infop info = NULL;
    unsigned char *volatile raw = NULL;
    png_bytep *volatile rows = NULL;
    unsigned char *volatile pixels = NULL;
    memset(out, 0, sizeof *out);
    if (size < 8 || png_sig_cmp(data, 0, 8) != 0) {
        set_message(message, message_size, "not a PNG (no PNG signature)");
        return AMBER_CODEC_CORRUPT;
    }
    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &reader, png_fail, png_warn);
    if (!png) {
        set_message(message, message_size, "out of memory");
        return AMBER_CODEC_OUT_OF_MEMORY;
    }
    info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        set_message(message, message_size, "out of memory");
        return AMBER_CODEC_OUT_OF_MEMORY;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(raw);
        free(rows);
        free(pixels);
        return reader.status == AMBER_CODEC_OK ? AMBER_CODEC_CORRUPT : reader.status;
    }
    png_set_read_fn(png, &reader, png_read_bytes);
    // Width and height up to PNG's own maximum, so that a large image is refused below as too
    // large (with its size), not by libpng as corrupt.
    png_set_user_limits(png, 0x7fffffffu, 0x7fffffffu);
    // Only the pixels matter (PIL's convert("RGB") ignores text, colour profiles, gamma, times):
    // every chunk but IHDR, PLTE, tRNS, IDAT and IEND is skipped unread, never decompressed or
    // kept. A few kilobytes of zTXt can otherwise inflate to gigabytes held until the end.
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
    png_set_chunk_cache_max(png, 64);
    png_set_chunk_malloc_max(png, 1u << 20);
    png_read_info(png, info);
    png_uint_32 width = 0, height = 0;
    int depth = 0, colour = 0;
    png_get_IHDR(png, info, &width, &height, &depth, &colour, NULL, NULL, NULL);
    if (width == 0 || height == 0 || (size_t)width * height > max_pixels) {
        char text[128];
        snprintf(text, sizeof text, "%u × %u pixels, more than the %zu allowed", width, height, max_pixels);
        set_message(message, message_size, text);
        reader.status = AMBER_CODEC_TOO_LARGE;
        png_longjmp(png, 1);
    }
    // To 8-bit grey, grey+alpha, RGB or RGBA; the alpha is dropped below, as PIL's convert("RGB")
    // drops it (no compositing). 16-bit samples keep their high byte.
    if (colour == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (colour == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int channels = png_get_channels(png, info);
    size_t row_bytes = png_get_rowbytes(png, info);
    if (channels < 1 || channels > 4 || png_get_bit_depth(png, info) != 8 || row_bytes != (size_t)width * channels) {
        set_message(message, message_size, "a PNG layout this decoder does not take");
        reader.status = AMBER_CODEC_UNSUPPORTED;
        png_longjmp(png, 1);
    }
    raw = malloc(row_bytes * height);
    rows = malloc(sizeof(png_bytep) * height);
    pixels = malloc((size_t)width * height * 3);
    if (!raw || !rows || !pixels) {
        set_message(message, message_size, "out of memory");
        reader.status = AMBER_CODEC_OUT_OF_MEMORY;
        png_longjmp(png, 1);
    }
    for (png_uint_32 y = 0; y < height; y++) rows[y] = raw + (size_t)y * row_bytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    size_t count = (size_t)width * height;
    for (size_t i = 0; i < count; i++) {
        const unsigned char *p = raw + i * channels;
        unsigned char *q = pixels + i * 3;
        if (channels <= 2) {
            q[0] = q[1] = q[2] = p[0];
        } else {
            q[0] = p[0];
            q[1] = p[1];
            q[2] = p[2];
        }
    }
    png_destroy_read_struct(&png, &info, NULL);
    free(raw);
    free(rows);
    out->pixels = pixels;
    out->width = (int)width;
    out->height = (int)height;
    return AMBER_CODEC_OK;
}
