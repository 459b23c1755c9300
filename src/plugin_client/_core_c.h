/* The C helpers of the compiled core (_core.pyx declares them with
   `cdef extern from "_core_c.h"`): system calls that glibc 2.28 has no
   wrapper for, the waits and spins that must run without the GIL, and the
   vfork spawn fallback. Plain C, so it can be compiled and warned about on
   its own (tests/test_core_c_header.py does, with -Wall -Wextra -Werror).

   The wheel targets manylinux_2_28 (glibc 2.28): anything newer is either
   looked up at run time (pc_resolve) or pinned to an old symbol version
   below, and .ci/wheel-check's auditwheel step checks the result. */
#ifndef PLUGIN_CLIENT_CORE_C_H
#define PLUGIN_CLIENT_CORE_C_H

/* Python.h defines it first in the extension; a compile of this header on
   its own needs it for ppoll, pipe2, vfork, RTLD_DEFAULT and CPU_COUNT. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>  /* clock_gettime: Cython's build had it from _core.pxd */
#include <unistd.h>

/* Build headers as old as manylinux_2_28's (Linux 4.18) lack these; the
   numbers are the same on every architecture since Linux 5.1. */
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_execveat
#error "execveat's system call number is unknown on this architecture"
#endif
#ifndef AT_EMPTY_PATH
#define AT_EMPTY_PATH 0x1000
#endif

static int pc_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }
static int pc_pidfd_send_signal(int pidfd, int sig) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}
static int pc_close_range(unsigned int lo, unsigned int hi) {
    return (int)syscall(SYS_close_range, lo, hi, 0);
}

/* poll() with a timeout in seconds to the nanosecond (ppoll), so a wait
   of 0.2 ms lasts 0.2 ms, not the whole millisecond poll() rounds up to.
   seconds < 0: no timeout. */
static int pc_poll_for(struct pollfd *fds, nfds_t n, double seconds) {
    struct timespec ts, *tp = NULL;
    if (seconds >= 0.0) {
        if (seconds > 1e9)
            seconds = 1e9;
        ts.tv_sec = (time_t)seconds;
        ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
        if (ts.tv_nsec > 999999999L)
            ts.tv_nsec = 999999999L;
        tp = &ts;
    }
    return ppoll(fds, n, tp, NULL);
}

/* The adaptive spin of FrameReader: re-read a non-blocking fd until it
   gives data, EOF or an error other than EAGAIN, or CLOCK_MONOTONIC
   passes `until` (then -1 with *err = EAGAIN). Returns read()'s result.
   Each empty read is followed by sched_yield(): a plugin waiting for this
   very CPU runs at once (the spin never starves it), and with nobody
   else runnable here the yield returns at once and the spin goes on. */
static ssize_t pc_spin_read(int fd, char *dst, size_t cap, double until, int *err) {
    struct timespec ts;
    for (;;) {
        ssize_t n = read(fd, dst, cap);
        if (n >= 0)
            return n;
        if (errno != EAGAIN) {
            *err = errno;
            return -1;
        }
        sched_yield();
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if ((double)((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec) / 1e9 >= until) {
            *err = EAGAIN;
            return -1;
        }
    }
}

/* Child.wait's spin: poll(fd, 0) with sched_yield() between tries, until
   fd is readable (1), CLOCK_MONOTONIC passes `until` (0) or poll fails (-1). */
static int pc_spin_poll(int fd, double until) {
    struct pollfd pfd;
    struct timespec ts;
    for (;;) {
        int r;
        pfd.fd = fd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        r = poll(&pfd, 1, 0);
        if (r != 0)
            return r > 0 ? 1 : (errno == EINTR ? 0 : -1);
        sched_yield();
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if ((double)((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec) / 1e9 >= until)
            return 0;
    }
}

/* Spinning only helps if the plugin can run on another CPU meanwhile.
   Not on a machine with one CPU online, and not when this thread may run
   on one CPU only: a plugin inherits its host's affinity at spawn, so it
   is most likely on that very CPU, waiting for the spin to end. */
static int pc_can_spin(void) {
    static int cpus = 0;
    cpu_set_t set;
    if (cpus == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cpus = n > 0 ? (int)n : 1;
    }
    if (cpus < 2 || sched_getaffinity(0, sizeof set, &set) != 0)
        return 0;
    return CPU_COUNT(&set) > 1;
}

/* Built against glibc >= 2.34, dlsym and pthread_sigmask would bind to the
   versions that moved them into libc (2.34, 2.32) and the wheel would need
   that glibc. Bind them to the versions every glibc since 2.17 exports, as a
   build inside the manylinux_2_28 image does anyway. */
#if defined(__GLIBC__) && defined(__GLIBC_PREREQ)
#if __GLIBC_PREREQ(2, 34)
#if defined(__x86_64__)
__asm__(".symver dlsym,dlsym@GLIBC_2.2.5");
__asm__(".symver pthread_sigmask,pthread_sigmask@GLIBC_2.2.5");
#elif defined(__aarch64__)
__asm__(".symver dlsym,dlsym@GLIBC_2.17");
__asm__(".symver pthread_sigmask,pthread_sigmask@GLIBC_2.17");
#endif
#endif
#endif

/* glibc 2.34 and 2.29 respectively: found at run time, never linked. */
typedef int (*pc_addclosefrom_fn)(posix_spawn_file_actions_t *, int);
typedef int (*pc_addchdir_fn)(posix_spawn_file_actions_t *, const char *);
static pc_addclosefrom_fn pc_addclosefrom = NULL;
static pc_addchdir_fn pc_addchdir = NULL;

static void pc_resolve(void) {
    pc_addclosefrom = (pc_addclosefrom_fn)dlsym(
        RTLD_DEFAULT, "posix_spawn_file_actions_addclosefrom_np");
    pc_addchdir = (pc_addchdir_fn)dlsym(RTLD_DEFAULT, "posix_spawn_file_actions_addchdir_np");
}
static int pc_have_closefrom(void) { return pc_addclosefrom != NULL; }
static int pc_have_addchdir(void) { return pc_addchdir != NULL; }
static int pc_fa_closefrom(posix_spawn_file_actions_t *fa, int lowfd) {
    return pc_addclosefrom(fa, lowfd);
}
static int pc_fa_chdir(posix_spawn_file_actions_t *fa, const char *path) {
    return pc_addchdir(fa, path);
}

/* ---- The fallback: vfork + exec, as CPython's _posixsubprocess does. ----
   The child shares the parent's memory until it execs or exits, so it only
   makes async-signal-safe calls, allocates nothing and touches no shared
   state but errno; it reports failures through a close-on-exec pipe. */
enum { PC_STEP_SETUP = 1, PC_STEP_CHDIR = 2, PC_STEP_EXEC = 3 };
struct pc_report { int step; int err; };
struct pc_dirent64 {
    unsigned long long d_ino; long long d_off;
    unsigned short d_reclen; unsigned char d_type; char d_name[];
};

/* Close [lo, hi] (hi >= lo - 1: an empty range is nothing to do). */
static int pc_close_between(int lo, int hi) {
    return hi < lo ? 0 : pc_close_range((unsigned int)lo, (unsigned int)hi);
}

/* Close every fd >= 3 except keep (the report pipe, >= 3, close-on-exec) and
   keep2 (the fd to exec, >= 3 and close-on-exec, or -1). */
static void pc_child_close_fds(int keep, int keep2, long maxfd) {
    int lo = keep, hi = keep2;
    if (hi < 0)
        hi = lo;
    else if (hi < lo) {
        lo = keep2;
        hi = keep;
    }
    if (pc_close_between(3, lo - 1) == 0 && pc_close_between(lo + 1, hi - 1) == 0
        && pc_close_range((unsigned int)hi + 1, ~0U) == 0)
        return;
    /* close_range is Linux 5.9: list /proc/self/fd with raw getdents64.
       Closing while listing is safe there: its offsets are fd numbers. */
    int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        char buf[1024] __attribute__((aligned(8)));
        long n;
        while ((n = syscall(SYS_getdents64, dfd, buf, sizeof buf)) > 0) {
            for (long off = 0; off < n;) {
                struct pc_dirent64 *d = (struct pc_dirent64 *)(buf + off);
                const char *p = d->d_name;
                int fd = 0;
                off += d->d_reclen;
                if (*p < '0' || *p > '9')
                    continue;
                for (; *p >= '0' && *p <= '9'; p++)
                    fd = fd * 10 + (*p - '0');
                if (fd >= 3 && fd != keep && fd != keep2 && fd != dfd)
                    close(fd);
            }
        }
        close(dfd);
        if (n == 0)
            return;
    }
    for (long fd = 3; fd < maxfd; fd++)  /* no /proc: brute force */
        if (fd != keep && fd != keep2)
            close((int)fd);
}

__attribute__((noreturn, noinline))
static void pc_child_exec(const char *path, char *const argv[], char *const envp[],
                          const char *cwd, int fd0, int fd1, int fd2, int execfd,
                          const char *fdpath, int repfd, long maxfd) {
    struct pc_report rep = { PC_STEP_SETUP, 0 };
    struct sigaction sa;
    sigset_t empty;
    int sig;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    /* Python ignores SIGPIPE and SIGXFSZ; a plugin must not inherit that.
       Handlers are reset too, before signals are unblocked below, so the
       parent's handlers can never run in this borrowed address space. */
    for (sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            (void)sigaction(sig, &sa, NULL);
    if (setpgid(0, 0) < 0)
        goto fail;
    /* The parent made every pipe fd >= 3, so no dup2 clobbers another. */
    if (dup2(fd0, 0) < 0 || dup2(fd1, 1) < 0 || dup2(fd2, 2) < 0)
        goto fail;
    pc_child_close_fds(repfd, execfd, maxfd);
    if (cwd != NULL && chdir(cwd) < 0) {
        rep.step = PC_STEP_CHDIR;
        goto fail;
    }
    sigemptyset(&empty);
    (void)sigprocmask(SIG_SETMASK, &empty, NULL);
    rep.step = PC_STEP_EXEC;
    if (execfd >= 0) {
        /* The verified file itself, whatever its path names by now. The
           fd is close-on-exec: the plugin never holds it. */
        syscall(SYS_execveat, execfd, "", argv, envp, AT_EMPTY_PATH);
        if (errno == ENOSYS)  /* Linux < 3.19: the same file through /proc */
            execve(fdpath, argv, envp);
    } else
        execve(path, argv, envp);
fail:
    rep.err = errno;
    while (write(repfd, &rep, sizeof rep) < 0 && errno == EINTR) {
    }
    _exit(127);
}

/* 0 and *out_pid, or an errno with *out_step saying which step failed.
   execfd >= 3: exec that fd (fdpath is its /proc/self/fd path) instead of path. */
static int pc_vfork_spawn(const char *path, char *const argv[], char *const envp[],
                          const char *cwd, int fd0, int fd1, int fd2,
                          int execfd, const char *fdpath,
                          pid_t *out_pid, int *out_step) {
    struct rlimit rl;
    struct pc_report rep;
    sigset_t all, old;
    long maxfd = 1024;
    int rp[2], i, err, status;
    pid_t pid;
    ssize_t n;

    *out_step = PC_STEP_SETUP;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        maxfd = rl.rlim_cur > 0x7fffffff ? 0x7fffffff : (long)rl.rlim_cur;
    /* Non-blocking: the report is written before vfork returns here, so an
       empty pipe means success, even if a fork in another thread holds a
       copy of the write end. */
    if (pipe2(rp, O_CLOEXEC | O_NONBLOCK) < 0)
        return errno;
    for (i = 0; i < 2; i++) {
        if (rp[i] < 3) {  /* keep it out of the child's dup2 targets */
            int fd = fcntl(rp[i], F_DUPFD_CLOEXEC, 3);
            err = errno;
            close(rp[i]);
            rp[i] = fd;
            if (fd < 0) {
                if (i == 1)
                    close(rp[0]);
                return err;
            }
        }
    }
    /* No handler of the parent may run in the child before exec. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = vfork();
    if (pid == 0)
        pc_child_exec(path, argv, envp, cwd, fd0, fd1, fd2, execfd, fdpath, rp[1], maxfd);
    err = errno;  /* meaningful only if vfork failed: the child clobbers errno */
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(rp[1]);
    if (pid < 0) {
        close(rp[0]);
        return err;
    }
    do
        n = read(rp[0], &rep, sizeof rep);
    while (n < 0 && errno == EINTR);
    close(rp[0]);
    if (n != (ssize_t)sizeof rep) {
        *out_pid = pid;
        return 0;
    }
    /* The child has _exit()ed already; reap it (ECHILD if SIGCHLD is ignored). */
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    *out_step = rep.step;
    return rep.err ? rep.err : EINVAL;
}

#endif /* PLUGIN_CLIENT_CORE_C_H */
