/*
 * JPEG decoding through libjpeg-turbo's libjpeg API, set up as Pillow sets it up (JDCT_ISLOW, fancy upsampling,
 * RGB, grey or CMYK output by the number of components), so that the pixels are Pillow's to the byte. The Rust side
 * (jpeg.rs) checks the header's size against the limit before calling this.
 *
 * Every libjpeg error longjmps back into the entry point that was called, never across a Rust frame: each entry
 * point sets the jump before it calls libjpeg and returns a status. After an error the handle may only be
 * destroyed. The progress monitor stops the work the same way when the host has an interrupt pending or the file
 * has more scans than allowed (a progressive file of many tiny scans costs much time for few bytes).
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

/* Pillow's pixels are libjpeg-turbo's: another libjpeg (IJG's, say) decodes differently. */
#ifndef LIBJPEG_TURBO_VERSION_NUMBER
#error "clip_core needs libjpeg-turbo's libjpeg (Debian: libjpeg62-turbo-dev)"
#endif

enum { CLIP_JPEG_OK = 0, CLIP_JPEG_ERROR = 1, CLIP_JPEG_INTERRUPTED = 2, CLIP_JPEG_TOO_MANY_SCANS = 3 };

struct clip_jpeg {
  /* First, so that libjpeg's common pointer is the handle's. */
  struct jpeg_decompress_struct cinfo;
  struct jpeg_error_mgr error;
  struct jpeg_progress_mgr progress;
  jmp_buf jump;
  int (*pending)(void);
  int max_scans;
  int status;
  char message[JMSG_LENGTH_MAX];
};

struct clip_jpeg_output {
  unsigned width;
  unsigned height;
  int components;
};

static void on_error(j_common_ptr common) {
  struct clip_jpeg *j = (struct clip_jpeg *)common;
  (*common->err->format_message)(common, j->message);
  j->status = CLIP_JPEG_ERROR;
  longjmp(j->jump, 1);
}

/* Warnings are not printed (the server's stderr is its log); libjpeg-turbo goes on after them as Pillow does. */
static void on_message(j_common_ptr common) { (void)common; }

static void on_progress(j_common_ptr common) {
  struct clip_jpeg *j = (struct clip_jpeg *)common;
  if (j->cinfo.input_scan_number > j->max_scans) {
    snprintf(j->message, sizeof j->message, "JPEG with more than %d scans", j->max_scans);
    j->status = CLIP_JPEG_TOO_MANY_SCANS;
    longjmp(j->jump, 1);
  }
  if (j->pending != NULL && j->pending()) {
    j->status = CLIP_JPEG_INTERRUPTED;
    longjmp(j->jump, 1);
  }
}

static int create_decompress(struct clip_jpeg *j) {
  if (setjmp(j->jump)) return j->status;
  jpeg_create_decompress(&j->cinfo);
  return CLIP_JPEG_OK;
}

struct clip_jpeg *clip_jpeg_create(void) {
  struct clip_jpeg *j = calloc(1, sizeof *j);
  if (j == NULL) return NULL;
  j->cinfo.err = jpeg_std_error(&j->error);
  j->error.error_exit = on_error;
  j->error.output_message = on_message;
  if (create_decompress(j) != CLIP_JPEG_OK) {
    free(j);
    return NULL;
  }
  return j;
}

void clip_jpeg_destroy(struct clip_jpeg *j) {
  if (j == NULL) return;
  jpeg_destroy_decompress(&j->cinfo);
  free(j);
}

const char *clip_jpeg_message(const struct clip_jpeg *j) { return j->message; }

/*
 * Reads the header and starts decompression at 1/scale_denom of the size (1, 2, 4 or 8: libjpeg-turbo's reduced
 * IDCT, as Pillow's draft() asks for), with at most max_memory bytes for libjpeg's own buffers. A progressive file
 * is read whole here. `pending` (may be NULL) is asked as the work goes on.
 */
int clip_jpeg_start(struct clip_jpeg *j, const unsigned char *data, size_t len, unsigned scale_denom,
                    long max_memory, int max_scans, int (*pending)(void),
                    struct clip_jpeg_output *output) {
  if (setjmp(j->jump)) return j->status;
  j->pending = pending;
  j->max_scans = max_scans;
  j->progress.progress_monitor = on_progress;
  j->cinfo.progress = &j->progress;
  j->cinfo.mem->max_memory_to_use = max_memory;
  jpeg_mem_src(&j->cinfo, data, (unsigned long)len);
  jpeg_read_header(&j->cinfo, TRUE);
  switch (j->cinfo.num_components) {
    case 1: j->cinfo.out_color_space = JCS_GRAYSCALE; break;
    case 3: j->cinfo.out_color_space = JCS_RGB; break;
    case 4: j->cinfo.out_color_space = JCS_CMYK; break;
    default:
      snprintf(j->message, sizeof j->message, "JPEG with %d colour components", j->cinfo.num_components);
      return CLIP_JPEG_ERROR;
  }
  j->cinfo.dct_method = JDCT_ISLOW;
  j->cinfo.do_fancy_upsampling = TRUE;
  j->cinfo.scale_num = 1;
  j->cinfo.scale_denom = scale_denom;
  jpeg_start_decompress(&j->cinfo);
  output->width = j->cinfo.output_width;
  output->height = j->cinfo.output_height;
  output->components = j->cinfo.output_components;
  return CLIP_JPEG_OK;
}

/* Decodes every row into `out` (height rows of `stride` bytes, stride >= width * components) and finishes. */
int clip_jpeg_read(struct clip_jpeg *j, unsigned char *out, size_t stride) {
  if (setjmp(j->jump)) return j->status;
  while (j->cinfo.output_scanline < j->cinfo.output_height) {
    JSAMPROW row = out + (size_t)j->cinfo.output_scanline * stride;
    jpeg_read_scanlines(&j->cinfo, &row, 1);
  }
  jpeg_finish_decompress(&j->cinfo);
  return CLIP_JPEG_OK;
}
