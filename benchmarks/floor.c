/* The syscall floor for reading safetensors headers: per file, open + pread(8)
 * for the length prefix + pread(n) for the JSON + close, and nothing else (no
 * parsing, no validation, no stat, no fadvise). Whatever a header reader does,
 * it cannot do less I/O than this.
 *
 *   cc -O2 -pthread -o floor floor.c
 *   floor PATHS_FILE THREADS REPEATS [drop]
 *
 * PATHS_FILE holds one path a line. Each repeat reads every file once, on
 * THREADS threads taking files from a shared counter. Prints one JSON line:
 * {"files": N, "threads": T, "times": [wall seconds per repeat...],
 *  "cpu": [CPU seconds per repeat, all threads...], "header_bytes": B,
 *  "errors": E, "peak_rss_kb": VmHWM}.
 * With "drop", the page cache is dropped (echo 3 > /proc/sys/vm/drop_caches)
 * before every repeat, outside the timed region.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static char **paths;
static size_t npaths;
static atomic_size_t next_index;
static atomic_ullong total_bytes;
static atomic_size_t errors;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec * 1e-6 + (double)u.ru_stime.tv_sec +
           (double)u.ru_stime.tv_usec * 1e-6;
}

static void *worker(void *arg) {
    (void)arg;
    size_t cap = 1 << 16;
    unsigned char *buf = malloc(cap);
    unsigned long long bytes = 0;
    for (size_t i = atomic_fetch_add(&next_index, 1); i < npaths; i = atomic_fetch_add(&next_index, 1)) {
        int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            atomic_fetch_add(&errors, 1);
            continue;
        }
        unsigned char prefix[8];
        if (pread(fd, prefix, 8, 0) != 8) {
            atomic_fetch_add(&errors, 1);
            close(fd);
            continue;
        }
        uint64_t n = 0;
        for (int k = 7; k >= 0; --k) n = (n << 8) | prefix[k];
        if (n > 100000000u) {
            atomic_fetch_add(&errors, 1);
            close(fd);
            continue;
        }
        if (n > cap) {
            cap = (size_t)n;
            buf = realloc(buf, cap);
        }
        if (pread(fd, buf, (size_t)n, 8) != (ssize_t)n) atomic_fetch_add(&errors, 1);
        bytes += 8 + n;
        close(fd);
    }
    free(buf);
    atomic_fetch_add(&total_bytes, bytes);
    return NULL;
}

static void drop_caches(void) {
    sync();
    FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
    if (f == NULL || fputs("3\n", f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "floor: cannot drop caches: %s\n", strerror(errno));
        exit(3);
    }
}

/* This process's peak RSS (VmHWM of /proc/self/status), in KB. */
static long peak_rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s PATHS_FILE THREADS REPEATS [drop]\n", argv[0]);
        return 2;
    }
    const int threads = atoi(argv[2]);
    const int repeats = atoi(argv[3]);
    const int drop = argc > 4 && strcmp(argv[4], "drop") == 0;
    FILE *list = fopen(argv[1], "r");
    if (list == NULL || threads < 1 || repeats < 1) {
        fprintf(stderr, "floor: bad arguments\n");
        return 2;
    }
    size_t cap = 1024;
    paths = malloc(cap * sizeof *paths);
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t len;
    while ((len = getline(&line, &line_cap, list)) > 0) {
        if (line[len - 1] == '\n') line[--len] = '\0';
        if (len == 0) continue;
        if (npaths == cap) paths = realloc(paths, (cap *= 2) * sizeof *paths);
        paths[npaths++] = strdup(line);
    }
    fclose(list);
    free(line);

    pthread_t *pool = malloc((size_t)threads * sizeof *pool);
    double *wall = malloc((size_t)repeats * sizeof *wall);
    double *cpu = malloc((size_t)repeats * sizeof *cpu);
    unsigned long long bytes = 0;
    for (int r = 0; r < repeats; ++r) {
        if (drop) drop_caches();
        atomic_store(&next_index, 0);
        atomic_store(&total_bytes, 0);
        const double c0 = cpu_seconds();
        const double t0 = now();
        for (int t = 1; t < threads; ++t) pthread_create(&pool[t], NULL, worker, NULL);
        worker(NULL);
        for (int t = 1; t < threads; ++t) pthread_join(pool[t], NULL);
        wall[r] = now() - t0;
        cpu[r] = cpu_seconds() - c0;
        bytes = atomic_load(&total_bytes);
    }
    printf("{\"files\": %zu, \"threads\": %d, \"times\": [", npaths, threads);
    for (int r = 0; r < repeats; ++r) printf("%s%.9f", r ? ", " : "", wall[r]);
    printf("], \"cpu\": [");
    for (int r = 0; r < repeats; ++r) printf("%s%.9f", r ? ", " : "", cpu[r]);
    printf("], \"header_bytes\": %llu, \"errors\": %zu, \"peak_rss_kb\": %ld}\n", bytes,
           atomic_load(&errors), peak_rss_kb());
    return atomic_load(&errors) == 0 ? 0 : 1;
}
