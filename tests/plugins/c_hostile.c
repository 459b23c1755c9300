/* A fast, fault-injecting secret-source plugin in C, for the reliability and
 * security tests (tests/test_reliability_*.py, tests/test_security_*.py).
 *
 * Like echo_plugin.py it is a *foreign* plugin written from PROTOCOL.md
 * only, but it starts in about a millisecond (a Python plugin needs ~30 ms),
 * so the tests can afford thousands of spawns, and it can misbehave in ways a
 * Python script cannot cheaply (write a gigabyte, fork daemons, dump its raw
 * environment). It parses only what our host sends: compact JSON, one request
 * per line, ids as plain integers, references without quotes or backslashes.
 *
 * Before reading anything it looks at HOSTILE_START (when allow-listed):
 *     exit        exit(3) at once              sleep      never read stdin
 *     prereply    write a reply nobody asked for, then serve normally
 *     term-sleep  ignore SIGTERM, fork 2 children that do too, never read
 *
 * The reference passed to get (or put/validate) selects a behaviour:
 *     value:<x>        reply with value <x>      crash           _exit(7) before replying
 *     crash-partial    half a reply, then _exit  exit-after      reply, then _exit(0)
 *     endless:<n>      n bytes with no newline, then sleep (n = 1 GiB if 0)
 *     stderr:<n>:<l>   n bytes on stderr in lines of l bytes, then reply
 *     garbage          an invalid-UTF-8, non-JSON line
 *     garbage-sleep    binary junk with no newline, then sleep
 *     partial          half a frame, then sleep  hang            never reply
 *     badid            reply with id + 1000      dup             reply twice (one write)
 *     prereply         reply, and with it a reply to the *next* id (one write)
 *     close-stdout     close stdout, stay alive
 *     term-fork:<n>    ignore SIGTERM and the end of stdin, fork n children
 *                      that ignore SIGTERM too (they keep stdout and stderr
 *                      open); reply with their pids
 *     setsid-daemon    double-fork a daemon that setsid()s, ignores SIGTERM and
 *                      keeps the plugin's stdout/stderr open; reply with its pid
 *     setpgid-child    fork a child that setpgid(0, 0)s (leaves the group, stays
 *                      in the session), ignores SIGTERM and keeps the plugin's
 *                      stdin/stdout/stderr open; reply with its pid
 *     flood-child:<m>  fork a child that stays in the group, ignores SIGTERM and
 *                      SIGPIPE and writes to stderr for ever: one "\n" per
 *                      write (m = nl) or 64 KiB of them (m = block); reply with
 *                      its pid. The plugin itself still exits at stdin EOF.
 *     setpgid-flood:<m>, setsid-flood:<m>
 *                      the same flooding child, after setpgid(0, 0) / setsid()
 *     (a flooder whose write fails, the host having closed the pipe, sleeps)
 *     stop-reading     reply, then never read stdin again
 *     environ          hex of every "NAME=value" entry, comma-separated
 *     fds              the open fds, comma-separated (checked with fcntl)
 *     ids              "pid,pgid,sid"
 *     secret:<how>     a reply carrying $HOSTILE_SECRET (for put: the value
 *                      the host sent) broken in the way <how> says: wrongshape,
 *                      notstring, badid, dup, huge, partial-exit, partial-hang,
 *                      badutf8, notjson, ambiguous, badversion, exit-after,
 *                      error-data, or anything else: a good reply
 *
 * init follows config "mode": hang (never answer), crash (exit 3), refuse
 * (an error reply), wrong-source, or nothing (a normal answer, all bits).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Set by term-fork: ignore the end of stdin too, as a stubborn plugin would. */
static int stubborn = 0;

static void write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            _exit(20);
        }
        buf += n;
        len -= (size_t)n;
    }
}

static void puts_fd(int fd, const char *s) { write_all(fd, s, strlen(s)); }

static void sleep_forever(void) {
    for (;;) pause();
}

static void reply_value(unsigned long long id, const char *value, size_t vlen) {
    char head[96];
    int n = snprintf(head, sizeof head, "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"result\":{\"value\":\"", id);
    /* One write per reply, so a reply is never split across two writes. */
    size_t total = (size_t)n + vlen + 4;
    char *buf = malloc(total);
    if (!buf) _exit(21);
    memcpy(buf, head, (size_t)n);
    memcpy(buf + n, value, vlen);
    memcpy(buf + n + vlen, "\"}}\n", 4);
    write_all(1, buf, total);
    free(buf);
}

static void reply_str(unsigned long long id, const char *value) { reply_value(id, value, strlen(value)); }

/* Two replies in one write(), so they reach the host together: the second is
 * then always in the pipe (or the host's buffer) before the next request. */
static void reply_twice(unsigned long long id1, const char *v1, unsigned long long id2, const char *v2) {
    char buf[1200];
    int n = snprintf(buf, sizeof buf,
                     "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"result\":{\"value\":\"%s\"}}\n"
                     "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"result\":{\"value\":\"%s\"}}\n",
                     id1, v1, id2, v2);
    write_all(1, buf, (size_t)n);
}

static void reply_raw(unsigned long long id, const char *result_json) {
    char buf[512];
    int n = snprintf(buf, sizeof buf, "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"result\":%s}\n", id, result_json);
    write_all(1, buf, (size_t)n);
}

/* The string value of "key":"..." in line, copied into out (no unescaping). */
static int field(const char *line, const char *key, char *out, size_t cap) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(line, pat);
    if (!p) return 0;
    p += strlen(pat);
    size_t i = 0;
    while (p[i] && !(p[i] == '"' && (i == 0 || p[i - 1] != '\\'))) {
        if (i + 1 >= cap) return 0;
        out[i] = p[i];
        i++;
    }
    out[i] = 0;
    return 1;
}

static void hex_environ(unsigned long long id) {
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    static const char digits[] = "0123456789abcdef";
    for (char **e = environ; *e; e++) {
        size_t n = strlen(*e);
        while (len + 2 * n + 2 > cap) out = realloc(out, cap *= 2);
        if (len) out[len++] = ',';
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)(*e)[i];
            out[len++] = digits[c >> 4];
            out[len++] = digits[c & 15];
        }
    }
    reply_value(id, out, len);
    free(out);
}

static void list_fds(unsigned long long id) {
    char out[4096];
    size_t len = 0;
    for (int fd = 0; fd < 65536 && len < sizeof out - 16; fd++) {
        if (fcntl(fd, F_GETFD) != -1) len += (size_t)snprintf(out + len, sizeof out - len, len ? ",%d" : "%d", fd);
    }
    out[len] = 0;
    reply_str(id, out);
}

static void endless(long long n) {
    static char block[65536];
    memset(block, 'x', sizeof block);
    if (n <= 0) n = 1LL << 30;
    while (n > 0) {
        size_t chunk = n < (long long)sizeof block ? (size_t)n : sizeof block;
        write_all(1, block, chunk);
        n -= (long long)chunk;
    }
    sleep_forever();
}

static void flood_stderr(long long n, long long linelen) {
    if (linelen < 1) linelen = 100;
    char *line = malloc((size_t)linelen);
    memset(line, 'e', (size_t)linelen);
    line[linelen - 1] = '\n';
    /* Write in big blocks of whole lines, so the flood is fast. */
    size_t per = (size_t)(65536 / linelen) + 1;
    char *block = malloc(per * (size_t)linelen);
    for (size_t i = 0; i < per; i++) memcpy(block + i * (size_t)linelen, line, (size_t)linelen);
    while (n > 0) {
        long long chunk = n < (long long)(per * (size_t)linelen) ? n : (long long)(per * (size_t)linelen);
        write_all(2, block, (size_t)chunk);
        n -= chunk;
    }
    free(block);
    free(line);
}

/* Write "\n"s to stderr for ever (m = "nl": one per write; else 64 KiB per write). */
static void flood_forever(const char *m) {
    static char block[65536];
    size_t len = strcmp(m, "nl") ? sizeof block : 1;
    memset(block, '\n', sizeof block);
    for (;;) {
        if (write(2, block, len) < 0 && errno != EINTR) sleep_forever();
    }
}

/* Fork a child that ignores SIGTERM and SIGPIPE, leaves the group (how = 1:
 * setpgid(0, 0)) or the session (how = 2: setsid()) or neither (how = 0), and
 * then floods stderr (m) or, for m == NULL, sleeps holding the plugin's pipes.
 * Returns its pid once it has left, so the host never sees it half-way. */
static pid_t fork_escapee(int how, const char *m) {
    int p[2];
    if (pipe(p) != 0) _exit(22);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGTERM, SIG_IGN);
        signal(SIGPIPE, SIG_IGN);
        if (how == 1) setpgid(0, 0);
        if (how == 2) setsid();
        close(p[0]);
        write_all(p[1], "k", 1);
        close(p[1]);
        if (m) flood_forever(m);
        sleep_forever();
    }
    char k;
    close(p[1]);
    if (read(p[0], &k, 1) != 1) _exit(23);
    close(p[0]);
    return pid;
}

static void reply_pid(unsigned long long id, pid_t pid) {
    char out[32];
    snprintf(out, sizeof out, "%d", (int)pid);
    reply_str(id, out);
}

static void secret_reply(unsigned long long id, const char *secret, const char *how) {
    char buf[1024];
    int n;
    if (!strcmp(how, "wrongshape")) {
        n = snprintf(buf, sizeof buf, "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"result\":{\"value\":\"%s\",\"lease_seconds\":\"%s\"}}\n", id, secret, secret);
        write_all(1, buf, (size_t)n);
    } else if (!strcmp(how, "notstring")) {
        n = snprintf(buf, sizeof buf, "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"result\":{\"value\":[\"%s\"],\"%s\":1}}\n", id, secret, secret);
        write_all(1, buf, (size_t)n);
    } else if (!strcmp(how, "badid")) {
        reply_str(id + 7, secret);
    } else if (!strcmp(how, "dup")) {
        reply_twice(id, secret, id, secret);
    } else if (!strcmp(how, "huge")) {
        for (int i = 0; i < 2000; i++) puts_fd(1, secret);
        sleep_forever();
    } else if (!strcmp(how, "partial-exit")) {
        n = snprintf(buf, sizeof buf, "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"result\":{\"value\":\"%s", id, secret);
        write_all(1, buf, (size_t)n);
        _exit(5);
    } else if (!strcmp(how, "partial-hang")) {
        n = snprintf(buf, sizeof buf, "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"result\":{\"value\":\"%s", id, secret);
        write_all(1, buf, (size_t)n);
        sleep_forever();
    } else if (!strcmp(how, "badutf8")) {
        n = snprintf(buf, sizeof buf, "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"result\":{\"value\":\"%s\xff\xfe\"}}\n", id, secret);
        write_all(1, buf, (size_t)n);
    } else if (!strcmp(how, "notjson")) {
        n = snprintf(buf, sizeof buf, "%s %s\n", secret, secret);
        write_all(1, buf, (size_t)n);
    } else if (!strcmp(how, "ambiguous")) {
        n = snprintf(buf, sizeof buf, "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"result\":{\"value\":\"%s\"},\"error\":{\"x\":\"%s\"}}\n", id, secret, secret);
        write_all(1, buf, (size_t)n);
    } else if (!strcmp(how, "badversion")) {
        n = snprintf(buf, sizeof buf, "{\"jsonrpc\":\"%s\",\"id\":%llu,\"result\":{\"value\":\"%s\"}}\n", secret, id, secret);
        write_all(1, buf, (size_t)n);
    } else if (!strcmp(how, "exit-after")) {
        reply_str(id, secret);
        _exit(0);
    } else if (!strcmp(how, "error-data")) {
        /* An error object whose documented text fields hold no secret. */
        n = snprintf(buf, sizeof buf, "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"error\":{\"kind\":\"other\",\"detail\":\"nope\",\"data\":\"%s\"}}\n", id, secret);
        write_all(1, buf, (size_t)n);
    } else {
        reply_str(id, secret);
    }
}

static void do_ref(unsigned long long id, const char *ref) {
    if (!strncmp(ref, "value:", 6)) return reply_str(id, ref + 6);
    if (!strcmp(ref, "crash")) _exit(7);
    if (!strcmp(ref, "crash-partial")) {
        char buf[64];
        int n = snprintf(buf, sizeof buf, "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"res", id);
        write_all(1, buf, (size_t)n);
        _exit(9);
    }
    if (!strcmp(ref, "exit-after")) {
        reply_str(id, "bye");
        _exit(0);
    }
    if (!strncmp(ref, "endless:", 8)) endless(atoll(ref + 8));
    if (!strncmp(ref, "stderr:", 7)) {
        char *colon = strchr(ref + 7, ':');
        flood_stderr(atoll(ref + 7), colon ? atoll(colon + 1) : 100);
        return reply_str(id, "logged");
    }
    if (!strcmp(ref, "garbage")) {
        static const char junk[] = "\xff\xfe not json \x00 at all\n";
        return write_all(1, junk, sizeof junk - 1);
    }
    if (!strcmp(ref, "garbage-sleep")) {
        write_all(1, "\x01\x02\x03\xff{{{{", 8);
        sleep_forever();
    }
    if (!strcmp(ref, "partial")) {
        puts_fd(1, "{\"jsonrpc\":\"2.0\",\"id\":");
        sleep_forever();
    }
    if (!strcmp(ref, "hang")) sleep_forever();
    if (!strcmp(ref, "badid")) return reply_str(id + 1000, "wrong");
    if (!strcmp(ref, "dup")) return reply_twice(id, "one", id, "two");
    if (!strcmp(ref, "prereply")) return reply_twice(id, "now", id + 1, "before-you-asked");
    if (!strcmp(ref, "close-stdout")) {
        close(1);
        sleep_forever();
    }
    if (!strncmp(ref, "term-fork:", 10)) {
        int n = atoi(ref + 10);
        char out[1024] = "";
        size_t len = 0;
        signal(SIGTERM, SIG_IGN);
        stubborn = 1;
        for (int i = 0; i < n; i++) {
            pid_t pid = fork();
            if (pid == 0) sleep_forever(); /* SIG_IGN is inherited */
            len += (size_t)snprintf(out + len, sizeof out - len, len ? ",%d" : "%d", (int)pid);
        }
        return reply_str(id, out);
    }
    if (!strcmp(ref, "setsid-daemon")) {
        int p[2];
        if (pipe(p) != 0) _exit(22);
        pid_t mid = fork();
        if (mid == 0) {
            setsid();
            pid_t d = fork();
            if (d == 0) {
                signal(SIGTERM, SIG_IGN);
                close(p[0]);
                close(p[1]);
                sleep_forever(); /* keeps the plugin's stdin, stdout and stderr */
            }
            write_all(p[1], (const char *)&d, sizeof d);
            _exit(0);
        }
        pid_t d = 0;
        close(p[1]);
        if (read(p[0], &d, sizeof d) != sizeof d) _exit(23);
        close(p[0]);
        waitpid(mid, NULL, 0);
        char out[32];
        snprintf(out, sizeof out, "%d", (int)d);
        return reply_str(id, out);
    }
    if (!strcmp(ref, "setpgid-child")) return reply_pid(id, fork_escapee(1, NULL));
    if (!strncmp(ref, "flood-child:", 12)) return reply_pid(id, fork_escapee(0, ref + 12));
    if (!strncmp(ref, "setpgid-flood:", 14)) return reply_pid(id, fork_escapee(1, ref + 14));
    if (!strncmp(ref, "setsid-flood:", 13)) return reply_pid(id, fork_escapee(2, ref + 13));
    if (!strcmp(ref, "stop-reading")) {
        reply_str(id, "deaf");
        sleep_forever();
    }
    if (!strcmp(ref, "environ")) return hex_environ(id);
    if (!strcmp(ref, "fds")) return list_fds(id);
    if (!strcmp(ref, "ids")) {
        char out[64];
        snprintf(out, sizeof out, "%d,%d,%d", (int)getpid(), (int)getpgid(0), (int)getsid(0));
        return reply_str(id, out);
    }
    if (!strncmp(ref, "secret:", 7)) {
        const char *secret = getenv("HOSTILE_SECRET");
        return secret_reply(id, secret ? secret : "", ref + 7);
    }
    reply_str(id, ref);
}

static void serve_init(unsigned long long id, const char *line) {
    char source[512], mode[64] = "";
    if (!field(line, "source_name", source, sizeof source)) strcpy(source, "?");
    field(line, "mode", mode, sizeof mode);
    if (!strcmp(mode, "hang")) sleep_forever();
    if (!strcmp(mode, "crash")) _exit(3);
    if (!strcmp(mode, "refuse")) {
        char buf[256];
        int n = snprintf(buf, sizeof buf, "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"error\":{\"kind\":\"other\",\"detail\":\"refused\"}}\n", id);
        return write_all(1, buf, (size_t)n);
    }
    if (!strcmp(mode, "wrong-source")) strcpy(source, "someone-else");
    char res[700];
    snprintf(res, sizeof res, "{\"source_name\":\"%s\",\"capabilities_bits\":511,\"plugin_version\":\"c-hostile-1\"}", source);
    reply_raw(id, res);
}

int main(void) {
    const char *start = getenv("HOSTILE_START");
    if (start) {
        if (!strcmp(start, "exit")) return 3;
        if (!strcmp(start, "sleep")) sleep_forever();
        if (!strcmp(start, "prereply")) reply_str(1, "nobody-asked");
        if (!strcmp(start, "term-sleep")) {
            signal(SIGTERM, SIG_IGN);
            for (int i = 0; i < 2; i++)
                if (fork() == 0) sleep_forever();
            sleep_forever();
        }
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    char ref[4096];
    while ((len = getline(&line, &cap, stdin)) > 0) {
        const char *p = strstr(line, "\"id\":");
        unsigned long long id = p ? strtoull(p + 5, NULL, 10) : 0;
        const char *m = strstr(line, "\"method\":\"secret_source.");
        if (!m) continue;
        m += strlen("\"method\":\"secret_source.");
        if (!strncmp(m, "init\"", 5)) {
            serve_init(id, line);
        } else if (!strncmp(m, "is_available\"", 13)) {
            reply_raw(id, "{\"status\":\"available\"}");
        } else if (!strncmp(m, "list\"", 5)) {
            reply_raw(id, "{\"entries\":[]}");
        } else if (!strncmp(m, "validate\"", 9)) {
            reply_raw(id, "{\"ok\":true}");
        } else if (!strncmp(m, "get\"", 4) || !strncmp(m, "put\"", 4) || !strncmp(m, "delete\"", 7)) {
            if (!field(line, "reference", ref, sizeof ref)) strcpy(ref, "");
            if (!strncmp(m, "get\"", 4)) {
                do_ref(id, ref);
            } else if (!strncmp(m, "put\"", 4) && !strncmp(ref, "secret:", 7)) {
                /* Echo the value the host sent, broken as the reference says. */
                static char value[4096];
                if (!field(line, "value", value, sizeof value)) strcpy(value, "");
                secret_reply(id, value, ref + 7);
            } else if (!strcmp(ref, "crash") || !strcmp(ref, "hang") || !strcmp(ref, "stop-reading")) {
                do_ref(id, ref);
            } else {
                reply_raw(id, "{\"replaced\":false,\"existed\":false}");
            }
        } else if (!strncmp(m, "key_material\"", 13)) {
            reply_raw(id, "{\"material_b64\":\"AAECAw==\"}");
        } else {
            char buf[256];
            int n = snprintf(buf, sizeof buf, "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"error\":{\"kind\":\"unsupported-capability\",\"capability\":\"x\"}}\n", id);
            write_all(1, buf, (size_t)n);
        }
    }
    if (stubborn) sleep_forever();
    return 0;
}
