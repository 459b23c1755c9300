# The libc / POSIX calls that _core.pyx makes, all declared ``nogil`` so that
# the blocking ones (poll, read, write, nanosleep, posix_spawn) can run with
# the GIL released. Only what the core uses is declared; the types are as
# loose as Cython needs (it never sees the real layout of an extern struct).

cdef extern from "<errno.h>" nogil:
    int errno
    enum:
        EINTR
        EAGAIN
        EPIPE
        ECHILD
        ESRCH
        ENOSYS
        EBADF

cdef extern from "<string.h>" nogil:
    void *memchr(const void *s, int c, size_t n)
    int memcmp(const void *s1, const void *s2, size_t n)
    void *memmove(void *dest, const void *src, size_t n)
    void *memcpy(void *dest, const void *src, size_t n)
    void *memset(void *s, int c, size_t n)

cdef extern from "<math.h>" nogil:
    double ceil(double x)

cdef extern from "<stdlib.h>" nogil:
    void *malloc(size_t size)
    void *realloc(void *ptr, size_t size)
    void free(void *ptr)

cdef extern from "<sys/types.h>" nogil:
    ctypedef int pid_t
    ctypedef unsigned int id_t

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    ctypedef int clockid_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    enum: CLOCK_MONOTONIC
    int clock_gettime(clockid_t clk, timespec *ts)
    int nanosleep(const timespec *req, timespec *rem)

cdef extern from "<poll.h>" nogil:
    ctypedef unsigned long nfds_t
    cdef struct pollfd:
        int fd
        short events
        short revents
    enum:
        POLLIN
        POLLOUT
        POLLERR
        POLLHUP
        POLLNVAL
    int poll(pollfd *fds, nfds_t nfds, int timeout)

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)
    int close(int fd)

cdef extern from "<fcntl.h>" nogil:
    enum:
        F_GETFL
        F_SETFL
        F_DUPFD_CLOEXEC
        F_GETFD
        FD_CLOEXEC
        F_SETPIPE_SZ
        O_NONBLOCK
        O_ACCMODE
        O_WRONLY
        O_CLOEXEC
    int fcntl(int fd, int cmd, ...)
    int pipe2(int *pipefd, int flags)

cdef extern from "<signal.h>" nogil:
    ctypedef void (*sighandler_t)(int)
    sighandler_t SIG_IGN
    ctypedef struct sigset_t:
        pass
    cdef struct sigaction_t "sigaction":
        sighandler_t sa_handler
        int sa_flags
    ctypedef struct siginfo_t:
        int si_signo
        int si_code
        int si_status
        pid_t si_pid
    enum:
        SIGPIPE
        SIGTERM
        SIGKILL
        SIG_BLOCK
        SIG_SETMASK
        SA_SIGINFO
        CLD_EXITED
        CLD_KILLED
        CLD_DUMPED
    int sigaction(int sig, const sigaction_t *act, sigaction_t *oldact)
    int sigemptyset(sigset_t *s)
    int sigfillset(sigset_t *s)
    int sigaddset(sigset_t *s, int sig)
    int sigismember(const sigset_t *s, int sig)
    int sigpending(sigset_t *s)
    int sigtimedwait(const sigset_t *s, siginfo_t *info, const timespec *timeout)
    int pthread_sigmask(int how, const sigset_t *s, sigset_t *old)
    int kill(pid_t pid, int sig)
    int killpg(pid_t pgrp, int sig)

cdef extern from "<sys/wait.h>" nogil:
    ctypedef enum idtype_t:
        P_PID
    enum:
        WNOHANG
        WNOWAIT
        WEXITED
    bint WIFEXITED(int status)
    int WEXITSTATUS(int status)
    bint WIFSIGNALED(int status)
    int WTERMSIG(int status)
    pid_t waitpid(pid_t pid, int *status, int options)
    int waitid(idtype_t idtype, id_t id, siginfo_t *info, int options)

cdef extern from "<spawn.h>" nogil:
    ctypedef struct posix_spawnattr_t:
        pass
    ctypedef struct posix_spawn_file_actions_t:
        pass
    enum:
        POSIX_SPAWN_SETPGROUP
        POSIX_SPAWN_SETSIGDEF
        POSIX_SPAWN_SETSIGMASK
    int posix_spawnattr_init(posix_spawnattr_t *attr)
    int posix_spawnattr_destroy(posix_spawnattr_t *attr)
    int posix_spawnattr_setflags(posix_spawnattr_t *attr, short flags)
    int posix_spawnattr_setpgroup(posix_spawnattr_t *attr, pid_t pgroup)
    int posix_spawnattr_setsigdefault(posix_spawnattr_t *attr, const sigset_t *s)
    int posix_spawnattr_setsigmask(posix_spawnattr_t *attr, const sigset_t *s)
    int posix_spawn_file_actions_init(posix_spawn_file_actions_t *fa)
    int posix_spawn_file_actions_destroy(posix_spawn_file_actions_t *fa)
    int posix_spawn_file_actions_adddup2(posix_spawn_file_actions_t *fa, int fd, int newfd)
    int posix_spawn(pid_t *pid, const char *path,
                    const posix_spawn_file_actions_t *fa, const posix_spawnattr_t *attr,
                    char *const argv[], char *const envp[])
