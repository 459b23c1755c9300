/* A minimal secret-source plugin in C, for the benchmarks: the fastest plugin
 * the protocol allows, so what is measured is the host.
 *
 * It reads its stdin with read(2) into one growing buffer, splits it on '\n'
 * and answers each request with one write(2) of the whole reply line. The
 * "JSON parser" only finds "id": <number>, "method": "<name>" and a few string
 * members by hand; that is enough for the requests hosts send.
 *
 *   init          echoes source_name; capabilities 0x1ff; "list_entries": N in
 *                 config sets the size of the list reply (default 10000)
 *   is_available  {"status":"available"}
 *   get           {"value": <the reference>} (the reference's JSON text verbatim)
 *   list          N entries of about 60 bytes: 10,000 make a ~600 KB line
 *   validate      {"ok":true}; put {"replaced":false}; delete {"existed":false}
 *   key_material  {"material_b64":"AAECAwQFBgcICQoLDA0ODw=="}
 *   other         a JSON-RPC "method not found" error
 *
 * On stdin EOF it exits 0. In SIGTERM mode (argv[1] == "--sigterm-2ms", or a
 * program name containing "sigterm", since PluginClient passes no arguments)
 * it ignores stdin EOF and exits 2 ms after SIGTERM instead. In stubborn mode (a
 * program name containing "stubborn") it ignores both: only SIGKILL ends it, so a
 * host's stop takes its whole exit_wait + shutdown_grace.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char *out;
static size_t out_cap;

static void out_reserve(size_t n) {
    if (n <= out_cap)
        return;
    out_cap = n * 2;
    out = realloc(out, out_cap);
    if (!out)
        _exit(70);
}

static void write_all(const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(1, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            _exit(errno == EPIPE ? 0 : 71);
        }
        p += w;
        n -= (size_t)w;
    }
}

/* The value after "key": (whitespace allowed around the colon), or NULL. */
static const char *member(const char *line, const char *end, const char *key) {
    size_t klen = strlen(key);
    const char *p = line;
    while ((p = memmem(p, (size_t)(end - p), key, klen)) != NULL) {
        p += klen;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p < end && *p == ':') {
            p++;
            while (p < end && (*p == ' ' || *p == '\t'))
                p++;
            return p;
        }
    }
    return NULL;
}

/* A JSON string's body (between its quotes, escapes kept) at p; *len set. */
static const char *string_at(const char *p, const char *end, size_t *len) {
    const char *q;
    if (p == NULL || p >= end || *p != '"')
        return NULL;
    for (q = p + 1; q < end && *q != '"'; q++)
        if (*q == '\\')
            q++;
    if (q >= end)
        return NULL;
    *len = (size_t)(q - p - 1);
    return p + 1;
}

static char *list_body;  /* {"entries":[...]} */
static size_t list_len;
static long list_entries = 10000;

static void build_list(void) {
    size_t cap = (size_t)list_entries * 80 + 64, n = 0;
    free(list_body);
    list_body = malloc(cap);
    if (!list_body)
        _exit(70);
    n += (size_t)sprintf(list_body + n, "{\"entries\":[");
    for (long i = 0; i < list_entries; i++)
        n += (size_t)sprintf(list_body + n,
                             "%s{\"reference\":\"svc/secret-%06ld\",\"display\":\"Secret %06ld\"}",
                             i ? "," : "", i, i);
    n += (size_t)sprintf(list_body + n, "]}");
    list_len = n;
}

static void reply(const char *id, size_t id_len, const char *body, size_t body_len) {
    static const char head[] = "{\"jsonrpc\":\"2.0\",\"id\":";
    static const char mid[] = ",\"result\":";
    size_t n = 0, need = sizeof head + id_len + sizeof mid + body_len + 4;
    out_reserve(need);
    memcpy(out + n, head, sizeof head - 1); n += sizeof head - 1;
    memcpy(out + n, id, id_len); n += id_len;
    memcpy(out + n, mid, sizeof mid - 1); n += sizeof mid - 1;
    memcpy(out + n, body, body_len); n += body_len;
    out[n++] = '}';
    out[n++] = '\n';
    write_all(out, n);
}

static void handle(const char *line, const char *end) {
    char small[512];
    const char *idp = member(line, end, "\"id\"");
    const char *m;
    size_t id_len = 0, mlen = 0, slen = 0;
    if (idp == NULL)
        return;
    while (idp + id_len < end && idp[id_len] >= '0' && idp[id_len] <= '9')
        id_len++;
    if (id_len == 0)
        return;
    m = string_at(member(line, end, "\"method\""), end, &mlen);
    if (m == NULL)
        return;
#define IS(name) (mlen == sizeof("secret_source." name) - 1 && memcmp(m, "secret_source." name, mlen) == 0)
    if (IS("get")) {
        const char *ref = string_at(member(line, end, "\"reference\""), end, &slen);
        size_t need = slen + 16, n;
        char *buf = need <= sizeof small ? small : malloc(need);
        if (ref == NULL || buf == NULL)
            return;
        n = (size_t)sprintf(buf, "{\"value\":\"");
        memcpy(buf + n, ref, slen); n += slen;
        buf[n++] = '"'; buf[n++] = '}';
        reply(idp, id_len, buf, n);
        if (buf != small)
            free(buf);
    } else if (IS("init")) {
        const char *src = string_at(member(line, end, "\"source_name\""), end, &slen);
        const char *le = member(line, end, "\"list_entries\"");
        int n;
        if (src == NULL || slen > 300)
            return;
        if (le != NULL) {
            long v = strtol(le, NULL, 10);
            if (v >= 0 && v != list_entries) {
                list_entries = v;
                free(list_body);
                list_body = NULL;
            }
        }
        n = snprintf(small, sizeof small,
                     "{\"source_name\":\"%.*s\",\"capabilities_bits\":511,\"plugin_version\":\"c-echo-1.0\"}",
                     (int)slen, src);
        reply(idp, id_len, small, (size_t)n);
    } else if (IS("list")) {
        if (list_body == NULL)
            build_list();
        reply(idp, id_len, list_body, list_len);
    } else if (IS("is_available")) {
        reply(idp, id_len, "{\"status\":\"available\"}", 22);
    } else if (IS("validate")) {
        reply(idp, id_len, "{\"ok\":true}", 11);
    } else if (IS("put")) {
        reply(idp, id_len, "{\"replaced\":false}", 18);
    } else if (IS("delete")) {
        reply(idp, id_len, "{\"existed\":false}", 17);
    } else if (IS("key_material")) {
        static const char km[] = "{\"material_b64\":\"AAECAwQFBgcICQoLDA0ODw==\"}";
        reply(idp, id_len, km, sizeof km - 1);
    } else {
        static const char head[] = "{\"jsonrpc\":\"2.0\",\"id\":";
        static const char tail[] = ",\"error\":{\"code\":-32601,\"message\":\"method not found\"}}\n";
        int n = snprintf(small, sizeof small, "%s%.*s%s", head, (int)id_len, idp, tail);
        write_all(small, (size_t)n);
    }
#undef IS
}

static void on_sigterm(int sig) {
    struct timespec ts = {0, 2000000};  /* 2 ms: a plugin flushing its state */
    (void)sig;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
    _exit(0);
}

int main(int argc, char **argv) {
    size_t cap = 1 << 20, start = 0, end = 0;
    char *buf = malloc(cap);
    int sigterm_mode = (argc > 1 && strcmp(argv[1], "--sigterm-2ms") == 0)
                       || (argc > 0 && strstr(argv[0], "sigterm") != NULL);
    int stubborn_mode = argc > 0 && strstr(argv[0], "stubborn") != NULL;
    if (!buf)
        return 70;
    if (sigterm_mode) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigterm;
        sigaction(SIGTERM, &sa, NULL);
    }
    if (stubborn_mode)
        signal(SIGTERM, SIG_IGN);
    for (;;) {
        ssize_t n;
        char *nl;
        if (end == cap) {
            if (start > 0) {
                memmove(buf, buf + start, end - start);
                end -= start;
                start = 0;
            } else {
                cap *= 2;
                buf = realloc(buf, cap);
                if (!buf)
                    return 70;
            }
        }
        n = read(0, buf + end, cap - end);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return 71;
        }
        if (n == 0)
            break;
        end += (size_t)n;
        while ((nl = memchr(buf + start, '\n', end - start)) != NULL) {
            handle(buf + start, nl);
            start = (size_t)(nl - buf) + 1;
        }
        if (start == end)
            start = end = 0;
    }
    if (sigterm_mode || stubborn_mode)
        for (;;)
            pause();
    return 0;
}
