/*
 * ragpipe_fs: the stats of many files, and a directory's listing, in one
 * call each (see src/internal/nativeFs.ts, which loads it, and
 * scripts/build-native.mjs, which builds it; the walk works without it).
 *
 *   statMany(paths: string[], out: Float64Array): void
 *
 * stat(2)s each path (following symlinks) and writes 8 numbers per path to
 * `out`, from index 8 × i: the error number (0 when the stat succeeded),
 * then st_mode, st_size, st_ino, the modification time's seconds and
 * nanoseconds and the change time's seconds and nanoseconds, each converted
 * to a double as Node converts them for fs.Stats. Where the error number is
 * not 0 the other seven are 0. A path that holds a NUL byte fails with
 * EINVAL, one longer than 4095 bytes in UTF-8 with ENAMETOOLONG; neither is
 * passed to the system. Throws a TypeError when `paths` is not an array of
 * strings or `out` is not a Float64Array, a RangeError when `out` is too
 * short. The paths are copied out of the array first; then, where there
 * are two processors and 128 paths or more, a second thread stats half of
 * them (stats scale across threads: 10,000 of them took 13.9-20.1 ms on one
 * thread, 8.1-11.0 ms on two, 6 runs each in C).
 *
 *   listDirectory(path: string, wholeBytes: number): [string, Uint8Array] | undefined
 *
 * The names in the directory `path` (without "." and ".."), sorted as
 * strcmp sorts them (as Node's fs.readdirSync returns them), in one string
 * where each is followed by "/" (which no name holds: one string to make,
 * not one per name), with each one's type: 1 file, 2 directory, 3 symlink,
 * 4 FIFO, 5 socket, 6 character device, 7 block device, 0 unknown. Where
 * the listing gives no type, lstat(2) tells it (0 when that fails too). Undefined, and nothing
 * listed, when the directory's st_size is 0 or above `wholeBytes`: the
 * caller then reads it in batches. A failure throws an Error whose `code`
 * is the error's name ("EACCES", "ENOENT", ...), as Node's errors have.
 *
 * Node's fs.statSync does one call per path, and builds an fs.Stats with
 * four Date objects for each: for the 10,000 files of an unchanged re-run,
 * 41-46 ms in a new process, against 17-23 ms for statMany in groups of
 * 1,024 on one thread (3 runs each); the ingest step of the unchanged
 * re-run took 67-112 ms (median 79) with two threads, 75-118 ms (median 83)
 * with one, 15 alternating runs each. Listing its 283 directories with fs.readdirSync
 * took 11.4-13.6 ms, with listDirectory 9.5-11.8 ms (4 runs each).
 */
#define _FILE_OFFSET_BITS 64
/* POSIX.1-2008 and, where the C library hides them otherwise, d_type and DT_* */
#define _DEFAULT_SOURCE
#if defined(__APPLE__)
#define _DARWIN_C_SOURCE
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <node_api.h>

#if defined(__linux__) && !defined(DT_UNKNOWN)
#error "d_type is needed: every entry would be lstat'ed"
#endif

#define FIELDS 8

#if defined(__APPLE__)
#define MODIFIED(st) ((st).st_mtimespec)
#define CHANGED(st) ((st).st_ctimespec)
#else
#define MODIFIED(st) ((st).st_mtim)
#define CHANGED(st) ((st).st_ctim)
#endif

/* PATH_MAX on Linux, the terminating NUL included */
#define PATH_BYTES 4096

static napi_value throw_type_error(napi_env env, const char *message) {
  napi_throw_type_error(env, NULL, message);
  return NULL;
}

/* Throws an Error like Node's for a failed call without a path: "ENOMEM: Cannot allocate memory, statMany". */
static napi_value throw_errno_plain(napi_env env, int error, const char *call);

static void stat_one(const char *path, double *out) {
  struct stat st;
  if (stat(path, &st) != 0) {
    out[0] = errno != 0 ? (double)errno : (double)EIO;
    return;
  }
  out[0] = 0;
  out[1] = (double)st.st_mode;
  out[2] = (double)st.st_size;
  out[3] = (double)st.st_ino;
  out[4] = (double)MODIFIED(st).tv_sec;
  out[5] = (double)MODIFIED(st).tv_nsec;
  out[6] = (double)CHANGED(st).tv_sec;
  out[7] = (double)CHANGED(st).tv_nsec;
}

/* An offset that marks a path not to stat (its error is already written). */
#define NO_PATH SIZE_MAX

/* A batch of paths to stat: each NUL-terminated in `bytes`, at `offsets[i]`; results to `out`. */
struct batch {
  const char *bytes;
  const size_t *offsets;
  double *out;
};

struct part {
  const struct batch *batch;
  uint32_t from, to;
};

static void *stat_part(void *arg) {
  const struct part *part = arg;
  for (uint32_t i = part->from; i < part->to; i++) {
    size_t offset = part->batch->offsets[i];
    if (offset != NO_PATH) stat_one(part->batch->bytes + offset, part->batch->out + (size_t)i * FIELDS);
  }
  return NULL;
}

/* A batch this large is stat'ed by two threads, where there are two processors. */
#define PARALLEL_PATHS 128

static bool two_processors(void) {
  static atomic_int online = 0; /* 0: not asked yet (threads that ask at once all get the same answer) */
  int known = atomic_load(&online);
  if (known == 0) {
    known = sysconf(_SC_NPROCESSORS_ONLN) > 1 ? 2 : 1;
    atomic_store(&online, known);
  }
  return known == 2;
}

/* Stats the batch's paths [0, count): half of them on a second thread when it is large enough. */
static void stat_batch(const struct batch *batch, uint32_t count) {
  if (count >= PARALLEL_PATHS && two_processors()) {
    pthread_t helper;
    struct part second = { batch, count / 2, count };
    if (pthread_create(&helper, NULL, stat_part, &second) == 0) {
      struct part first = { batch, 0, count / 2 };
      stat_part(&first);
      pthread_join(helper, NULL);
      return;
    }
  }
  struct part all = { batch, 0, count };
  stat_part(&all);
}

static napi_value stat_many(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 2) return throw_type_error(env, "statMany(paths, out): two arguments expected");

  bool is_array = false;
  if (napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array) {
    return throw_type_error(env, "statMany: paths must be an array of strings");
  }
  bool is_typed = false;
  if (napi_is_typedarray(env, argv[1], &is_typed) != napi_ok || !is_typed) {
    return throw_type_error(env, "statMany: out must be a Float64Array");
  }
  napi_typedarray_type type;
  size_t capacity = 0;
  void *data = NULL;
  if (napi_get_typedarray_info(env, argv[1], &type, &capacity, &data, NULL, NULL) != napi_ok) return NULL;
  if (type != napi_float64_array) return throw_type_error(env, "statMany: out must be a Float64Array");

  uint32_t count = 0;
  if (napi_get_array_length(env, argv[0], &count) != napi_ok) return NULL;
  if ((size_t)count > capacity / FIELDS) {
    napi_throw_range_error(env, NULL, "statMany: out must hold 8 numbers per path");
    return NULL;
  }
  double *out = (double *)data;
  if (count == 0) return NULL;

  /* the paths are copied out first: only this thread may call into Node-API */
  size_t *offsets = malloc((size_t)count * sizeof *offsets);
  size_t size = 64 * (size_t)count, used = 0;
  char *bytes = malloc(size);
  bool ok = offsets != NULL && bytes != NULL;
  if (!ok) throw_errno_plain(env, ENOMEM, "statMany");
  for (uint32_t i = 0; ok && i < count; i++) {
    double *fields = out + (size_t)i * FIELDS;
    memset(fields, 0, FIELDS * sizeof(double));
    offsets[i] = NO_PATH;
    napi_value element;
    if (napi_get_element(env, argv[0], i, &element) != napi_ok) {
      ok = false;
      break;
    }
    size_t length = 0;
    napi_status status = napi_get_value_string_utf8(env, element, NULL, 0, &length);
    if (status != napi_ok) {
      if (status == napi_string_expected) throw_type_error(env, "statMany: paths must be an array of strings");
      ok = false;
      break;
    }
    if (length > PATH_BYTES - 1) {
      fields[0] = (double)ENAMETOOLONG;
      continue;
    }
    if (used + length + 1 > size) {
      while (used + length + 1 > size) size *= 2;
      char *grown = realloc(bytes, size);
      if (grown == NULL) {
        throw_errno_plain(env, ENOMEM, "statMany");
        ok = false;
        break;
      }
      bytes = grown;
    }
    size_t copied = 0;
    if (napi_get_value_string_utf8(env, element, bytes + used, length + 1, &copied) != napi_ok) {
      ok = false;
      break;
    }
    if (strlen(bytes + used) != copied) {
      fields[0] = (double)EINVAL;
      continue;
    }
    offsets[i] = used;
    used += copied + 1;
  }
  if (ok) {
    struct batch batch = { bytes, offsets, out };
    stat_batch(&batch, count);
  } else {
    /* each failure above has thrown, but a Node-API call's may not have */
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && !pending) {
      napi_throw_error(env, NULL, "statMany: a Node-API call failed");
    }
  }
  free(bytes);
  free(offsets);
  return NULL;
}

/* The name of an error number, as Node's errors carry it in `code`. */
static const char *errno_name(int error) {
  switch (error) {
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ENOTDIR: return "ENOTDIR";
    case EIO: return "EIO";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ELOOP: return "ELOOP";
    case EBUSY: return "EBUSY";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EAGAIN: return "EAGAIN";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOMEM: return "ENOMEM";
    case EINVAL: return "EINVAL";
    case ESTALE: return "ESTALE";
    default: return "EUNKNOWN";
  }
}

static napi_value throw_errno_plain(napi_env env, int error, const char *call) {
  char message[256];
  snprintf(message, sizeof message, "%s: %s, %s", errno_name(error), strerror(error), call);
  napi_throw_error(env, errno_name(error), message);
  return NULL;
}

/* Throws an Error like Node's for a failed system call: "EACCES: permission denied, scandir '/x'". */
static napi_value throw_errno(napi_env env, int error, const char *call, const char *path) {
  char message[PATH_BYTES + 256];
  snprintf(message, sizeof message, "%s: %s, %s '%s'", errno_name(error), strerror(error), call, path);
  napi_throw_error(env, errno_name(error), message);
  return NULL;
}

enum { TYPE_UNKNOWN = 0, TYPE_FILE, TYPE_DIRECTORY, TYPE_SYMLINK, TYPE_FIFO, TYPE_SOCKET, TYPE_CHAR, TYPE_BLOCK };

static uint8_t type_of_mode(mode_t mode) {
  if (S_ISREG(mode)) return TYPE_FILE;
  if (S_ISDIR(mode)) return TYPE_DIRECTORY;
  if (S_ISLNK(mode)) return TYPE_SYMLINK;
  if (S_ISFIFO(mode)) return TYPE_FIFO;
  if (S_ISSOCK(mode)) return TYPE_SOCKET;
  if (S_ISCHR(mode)) return TYPE_CHAR;
  if (S_ISBLK(mode)) return TYPE_BLOCK;
  return TYPE_UNKNOWN;
}

static uint8_t type_of_entry(int dir_fd, const struct dirent *entry) {
#ifdef DT_UNKNOWN
  switch (entry->d_type) {
    case DT_REG: return TYPE_FILE;
    case DT_DIR: return TYPE_DIRECTORY;
    case DT_LNK: return TYPE_SYMLINK;
    case DT_FIFO: return TYPE_FIFO;
    case DT_SOCK: return TYPE_SOCKET;
    case DT_CHR: return TYPE_CHAR;
    case DT_BLK: return TYPE_BLOCK;
    default: break;
  }
#endif
  struct stat st;
  if (fstatat(dir_fd, entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) return TYPE_UNKNOWN;
  return type_of_mode(st.st_mode);
}

/* A directory's entries while it is read: their names one after the other (each with its NUL), offsets and types. */
struct listing {
  char *names;
  size_t names_used, names_size;
  size_t *offsets;
  uint8_t *types;
  size_t count, size;
};

static void listing_free(struct listing *l) {
  free(l->names);
  free(l->offsets);
  free(l->types);
}

static bool listing_add(struct listing *l, const char *name, uint8_t type) {
  size_t bytes = strlen(name) + 1;
  if (l->names_used + bytes > l->names_size) {
    size_t size = l->names_size == 0 ? 4096 : l->names_size;
    while (l->names_used + bytes > size) size *= 2;
    char *names = realloc(l->names, size);
    if (names == NULL) return false;
    l->names = names;
    l->names_size = size;
  }
  if (l->count == l->size) {
    size_t size = l->size == 0 ? 64 : l->size * 2;
    size_t *offsets = realloc(l->offsets, size * sizeof *offsets);
    if (offsets == NULL) return false;
    l->offsets = offsets;
    uint8_t *types = realloc(l->types, size);
    if (types == NULL) return false;
    l->types = types;
    l->size = size;
  }
  memcpy(l->names + l->names_used, name, bytes);
  l->offsets[l->count] = l->names_used;
  l->types[l->count] = type;
  l->names_used += bytes;
  l->count++;
  return true;
}

/* qsort's view of the listing whose entries it sorts (a worker thread may list at the same time) */
static _Thread_local const struct listing *sorting;

static int by_name(const void *a, const void *b) {
  return strcmp(sorting->names + sorting->offsets[*(const size_t *)a], sorting->names + sorting->offsets[*(const size_t *)b]);
}

static napi_value list_directory(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 2) return throw_type_error(env, "listDirectory(path, wholeBytes): two arguments expected");
  char path[PATH_BYTES];
  size_t length = 0;
  napi_status status = napi_get_value_string_utf8(env, argv[0], path, sizeof path, &length);
  if (status == napi_string_expected) return throw_type_error(env, "listDirectory: path must be a string");
  if (status != napi_ok) return NULL;
  double whole_bytes = 0;
  status = napi_get_value_double(env, argv[1], &whole_bytes);
  if (status == napi_number_expected) return throw_type_error(env, "listDirectory: wholeBytes must be a number");
  if (status != napi_ok) return NULL;
  if (length == sizeof path - 1) {
    if (napi_get_value_string_utf8(env, argv[0], NULL, 0, &length) != napi_ok) return NULL;
    if (length > sizeof path - 1) return throw_errno(env, ENAMETOOLONG, "scandir", path);
  }
  if (strlen(path) != length) return throw_errno(env, EINVAL, "scandir", path);

  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "scandir", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int error = errno;
    close(fd);
    return throw_errno(env, error, "scandir", path);
  }
  if (st.st_size <= 0 || (double)st.st_size > whole_bytes) {
    close(fd);
    return NULL;
  }
  DIR *dir = fdopendir(fd);
  if (dir == NULL) {
    int error = errno;
    close(fd);
    return throw_errno(env, error, "scandir", path);
  }
  struct listing l = {0};
  for (;;) {
    errno = 0;
    struct dirent *entry = readdir(dir);
    if (entry == NULL) {
      if (errno != 0) {
        int error = errno;
        listing_free(&l);
        closedir(dir);
        return throw_errno(env, error, "scandir", path);
      }
      break;
    }
    const char *name = entry->d_name;
    if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) continue;
    if (!listing_add(&l, name, type_of_entry(dirfd(dir), entry))) {
      listing_free(&l);
      closedir(dir);
      return throw_errno(env, ENOMEM, "scandir", path);
    }
  }
  closedir(dir);

  size_t *order = malloc((l.count == 0 ? 1 : l.count) * sizeof *order);
  if (order == NULL) {
    listing_free(&l);
    return throw_errno(env, ENOMEM, "scandir", path);
  }
  for (size_t i = 0; i < l.count; i++) order[i] = i;
  sorting = &l;
  qsort(order, l.count, sizeof *order, by_name);
  sorting = NULL;

  /* the names in one string, each followed by '/' (which no name holds): one string to make, split by the caller */
  char *joined = malloc(l.names_used == 0 ? 1 : l.names_used);
  if (joined == NULL) {
    free(order);
    listing_free(&l);
    return throw_errno(env, ENOMEM, "scandir", path);
  }
  napi_value result = NULL, names, types_buffer, types;
  void *types_data = NULL;
  bool made = true;
  {
    size_t at = 0;
    for (size_t i = 0; i < l.count; i++) {
      const char *name = l.names + l.offsets[order[i]];
      size_t bytes = strlen(name);
      memcpy(joined + at, name, bytes);
      joined[at + bytes] = '/';
      at += bytes + 1;
    }
    made = napi_create_string_utf8(env, joined, at, &names) == napi_ok &&
      napi_create_arraybuffer(env, l.count, &types_data, &types_buffer) == napi_ok &&
      napi_create_typedarray(env, napi_uint8_array, l.count, types_buffer, 0, &types) == napi_ok;
  }
  if (made) {
    for (size_t i = 0; i < l.count; i++) ((uint8_t *)types_data)[i] = l.types[order[i]];
    made = napi_create_array_with_length(env, 2, &result) == napi_ok &&
      napi_set_element(env, result, 0, names) == napi_ok &&
      napi_set_element(env, result, 1, types) == napi_ok;
  }
  free(joined);
  free(order);
  listing_free(&l);
  return made ? result : NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "statMany", NAPI_AUTO_LENGTH, stat_many, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "statMany", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "listDirectory", NAPI_AUTO_LENGTH, list_directory, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "listDirectory", fn) != napi_ok) return NULL;
  return exports;
}
