/* The physical limit: a C host doing raw write/read ping-pong with a plugin.
 *
 *   c_host rtt      PLUGIN N [REF]  N warm get round trips (after 1000 warm-up ones)
 *   c_host cold     PLUGIN N        N x (pipes + posix_spawn + init + first get)
 *   c_host cold-cpu PLUGIN N        the same, timed as this thread's own CPU time
 *                                   (CLOCK_THREAD_CPUTIME_ID): the host's share of it
 *   c_host shutdown PLUGIN N        N x (close stdin -> waitpid), a cooperative plugin
 *   c_host sigterm  PLUGIN N        N x (SIGTERM -> waitpid), the plugin in SIGTERM mode
 *
 * Each mode times every iteration with clock_gettime(CLOCK_MONOTONIC; for
 * cold-cpu, CLOCK_THREAD_CPUTIME_ID) and prints one JSON line: {"mode":..., "n":..., "samples_ns":[...], "median_ns":...,
 * "min_ns":..., "p10_ns":..., "p90_ns":..., "mean_ns":...}. The spawn is plain posix_spawn
 * with three pipes (stdin, stdout, stderr) and nothing else: no fd closing,
 * no signal reset, no process group. Reads block; there is no deadline. That
 * is what "the limit" means.
 *
 * C_HOST_PLUGIN_CPU=N in the environment starts the plugin on CPU N (the host
 * stays where it is): the "split" placement of the benchmarks. C_HOST_SPIN=1
 * makes the reads non-blocking and busy-waits on them (a host that burns its
 * CPU to catch a reply sooner, for comparison with the client's bounded spin).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

typedef struct {
    pid_t pid;
    int in, out, err;
    char buf[1 << 16];
    size_t start, end;
} plugin_t;

static int spin_reads;

static clockid_t clock_id = CLOCK_MONOTONIC;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(clock_id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void spawn_plugin(plugin_t *p, const char *path, const char *arg) {
    int in[2], out[2], err[2];
    posix_spawn_file_actions_t fa;
    char *argv[3] = {(char *)path, (char *)arg, NULL};
    const char *cpu = getenv("C_HOST_PLUGIN_CPU");
    cpu_set_t mine, theirs;
    if (cpu != NULL) {  /* the child inherits the affinity it is spawned with */
        sched_getaffinity(0, sizeof mine, &mine);
        CPU_ZERO(&theirs);
        CPU_SET(atoi(cpu), &theirs);
        sched_setaffinity(0, sizeof theirs, &theirs);
    }
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC))
        die("pipe2");
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    if (posix_spawn(&p->pid, path, &fa, NULL, argv, environ) != 0)
        die("posix_spawn");
    if (cpu != NULL)
        sched_setaffinity(0, sizeof mine, &mine);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    p->in = in[1];
    p->out = out[0];
    p->err = err[0];
    p->start = p->end = 0;
    if (spin_reads)
        fcntl(p->out, F_SETFL, fcntl(p->out, F_GETFL) | O_NONBLOCK);
}

static void send_line(plugin_t *p, const char *line, size_t n) {
    while (n > 0) {
        ssize_t w = write(p->in, line, n);
        if (w <= 0)
            die("write");
        line += w;
        n -= (size_t)w;
    }
}

/* Blocks until one reply line is in; returns its length (the line is dropped). */
static size_t read_line(plugin_t *p) {
    for (;;) {
        char *nl = memchr(p->buf + p->start, '\n', p->end - p->start);
        if (nl != NULL) {
            size_t len = (size_t)(nl - (p->buf + p->start));
            p->start += len + 1;
            if (p->start == p->end)
                p->start = p->end = 0;
            return len;
        }
        if (p->end == sizeof p->buf) {  /* a long line: keep only its tail */
            p->start = p->end = 0;
        }
        ssize_t r = read(p->out, p->buf + p->end, sizeof p->buf - p->end);
        if (r < 0 && spin_reads && errno == EAGAIN)
            continue;
        if (r <= 0)
            die("read");
        p->end += (size_t)r;
    }
}

static uint64_t id_counter = 1;

static void request(plugin_t *p, const char *fmt, const char *arg) {
    char line[512];
    int n = snprintf(line, sizeof line, fmt, (unsigned long long)id_counter++, arg);
    send_line(p, line, (size_t)n);
    read_line(p);
}

#define INIT "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"method\":\"secret_source.init\",\"params\":{\"source_name\":\"%s\",\"config\":{},\"protocol_version\":\"1.1\"}}\n"
#define GET "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"method\":\"secret_source.get\",\"params\":{\"reference\":\"%s\"}}\n"

static void reap(plugin_t *p) {
    int status;
    close(p->in);
    while (waitpid(p->pid, &status, 0) < 0)
        ;
    close(p->out);
    close(p->err);
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *mode, uint64_t *s, long n) {
    double mean = 0;
    for (long i = 0; i < n; i++)
        mean += (double)s[i];
    mean /= (double)n;
    printf("{\"mode\":\"%s\",\"n\":%ld,\"samples_ns\":[", mode, n);
    for (long i = 0; i < n; i++)  /* in the order measured */
        printf(i ? ",%llu" : "%llu", (unsigned long long)s[i]);
    qsort(s, (size_t)n, sizeof *s, cmp);
    printf("],\"median_ns\":%llu,\"min_ns\":%llu,\"p10_ns\":%llu,\"p90_ns\":%llu,\"mean_ns\":%.0f}\n",
           (unsigned long long)s[n / 2], (unsigned long long)s[0],
           (unsigned long long)s[n / 10], (unsigned long long)s[n * 9 / 10], mean);
}

int main(int argc, char **argv) {
    static plugin_t p;
    const char *mode, *path, *ref;
    long n;
    uint64_t *s;
    if (argc < 4) {
        fprintf(stderr, "usage: %s rtt|cold|cold-cpu|shutdown|sigterm PLUGIN N [REF]\n", argv[0]);
        return 2;
    }
    mode = argv[1];
    path = argv[2];
    n = strtol(argv[3], NULL, 10);
    ref = argc > 4 ? argv[4] : "db/password";
    if (n < 1)
        return 2;
    s = calloc((size_t)n, sizeof *s);
    signal(SIGPIPE, SIG_IGN);
    spin_reads = getenv("C_HOST_SPIN") != NULL && strcmp(getenv("C_HOST_SPIN"), "1") == 0;

    if (strcmp(mode, "rtt") == 0) {
        spawn_plugin(&p, path, NULL);
        request(&p, INIT, "bench");
        for (int i = 0; i < 1000; i++)
            request(&p, GET, ref);
        for (long i = 0; i < n; i++) {
            uint64_t t0 = now_ns();
            request(&p, GET, ref);
            s[i] = now_ns() - t0;
        }
        reap(&p);
    } else if (strcmp(mode, "cold") == 0 || strcmp(mode, "cold-cpu") == 0) {
        if (mode[4] == '-')
            clock_id = CLOCK_THREAD_CPUTIME_ID;
        for (long i = 0; i < n; i++) {
            uint64_t t0 = now_ns();
            spawn_plugin(&p, path, NULL);
            request(&p, INIT, "bench");
            request(&p, GET, ref);
            s[i] = now_ns() - t0;
            reap(&p);
        }
    } else if (strcmp(mode, "shutdown") == 0 || strcmp(mode, "sigterm") == 0) {
        int term = mode[1] == 'i';
        for (long i = 0; i < n; i++) {
            int status;
            uint64_t t0;
            spawn_plugin(&p, path, term ? "--sigterm-2ms" : NULL);
            request(&p, INIT, "bench");
            request(&p, GET, ref);
            t0 = now_ns();
            if (term)
                kill(p.pid, SIGTERM);
            else
                close(p.in);
            while (waitpid(p.pid, &status, 0) < 0)
                ;
            s[i] = now_ns() - t0;
            if (term)
                close(p.in);
            close(p.out);
            close(p.err);
        }
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    report(mode, s, n);
    return 0;
}
