/* devboy-source-c-echo: a secret-source plugin in C, with only the C library.
 *
 * Build (see README.md beside this file):
 *     cc -O2 -o devboy-source-c-echo c_echo.c
 * or, to also write the manifest with this machine's checksum:
 *     sh build.sh [OUTDIR]
 *
 * Capabilities READ | LIST | VALIDATE. `get` answers "echo:<reference>", except for
 * the reference "missing" (bad-reference, not found); `list` has two entries;
 * `validate` accepts any non-empty reference. Unknown methods are answered
 * unsupported-capability. It exits with status 0 on stdin EOF and on SIGTERM.
 *
 * JSON: a small scanner finds members of the request object by key, at the right
 * nesting level, and copies strings verbatim (escapes included), so what it echoes
 * is valid JSON for whatever the host sent.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    return p;
}

/* p at '"': returns the char after the closing quote, or NULL. */
static const char *skip_string(const char *p) {
    for (p++; *p; p++) {
        if (*p == '\\') {
            if (!*++p) return NULL;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

/* Skips one JSON value; returns the char after it, or NULL. */
static const char *skip_value(const char *p) {
    p = skip_ws(p);
    if (*p == '"') return skip_string(p);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (*p) {
            if (*p == '"') {
                p = skip_string(p);
                if (!p) return NULL;
                continue;
            }
            if (*p == '{' || *p == '[') depth++;
            if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    while (*p && *p != ',' && *p != '}' && *p != ']') p++;
    return p;
}

/* obj at '{': the value of member `key` (after the colon, blanks skipped), or NULL. */
static const char *member(const char *obj, const char *key) {
    size_t klen = strlen(key);
    const char *p = skip_ws(obj);
    if (*p != '{') return NULL;
    p = skip_ws(p + 1);
    while (*p == '"') {
        const char *kstart = p + 1, *kend = skip_string(p);
        if (!kend) return NULL;
        p = skip_ws(kend);
        if (*p != ':') return NULL;
        p = skip_ws(p + 1);
        if ((size_t)(kend - 1 - kstart) == klen && memcmp(kstart, key, klen) == 0) return p;
        p = skip_value(p);
        if (!p) return NULL;
        p = skip_ws(p);
        if (*p != ',') return NULL;
        p = skip_ws(p + 1);
    }
    return NULL;
}

/* v at a JSON string: sets *len to its raw length without quotes; returns its start. */
static const char *string_at(const char *v, size_t *len) {
    const char *end;
    if (!v || *v != '"') return NULL;
    end = skip_string(v);
    if (!end) return NULL;
    *len = (size_t)(end - v - 2);
    return v + 1;
}

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

/* Prints {"jsonrpc":"2.0","id":ID,"WHAT":BODY}; BODY holds at most one %.*s, for s. */
static void reply(const char *id, size_t idlen, const char *what, const char *body, const char *s, size_t slen) {
    const char *hole = strstr(body, "%.*s");
    printf("{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"%s\":", (int)idlen, id, what);
    if (hole) {
        fwrite(body, 1, (size_t)(hole - body), stdout);
        fwrite(s, 1, slen, stdout);
        fputs(hole + 4, stdout);
    } else {
        fputs(body, stdout);
    }
    fputs("}\n", stdout);
    fflush(stdout);
}

#define REPLY(what, body) reply(idv, idlen, what, body, "", 0)

int main(void) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);

    while ((n = getline(&line, &cap, stdin)) >= 0) {
        const char *idv = member(line, "id"), *idend, *mv, *params, *m, *s;
        size_t idlen, mlen = 0, slen = 0;
        if (!idv || !(idend = skip_value(idv)) || idend == idv || *idv < '0' || *idv > '9') {
            fputs("c-echo: ignoring a line that is not a request with an id\n", stderr);
            continue;
        }
        idlen = (size_t)(idend - idv);
        while (idlen && (idv[idlen - 1] == ' ' || idv[idlen - 1] == '\t')) idlen--;
        mv = member(line, "method");
        m = string_at(mv, &mlen);
        params = member(line, "params");
        if (!m) m = "", mlen = 0;
#define IS(name) (mlen == strlen(name) && memcmp(m, name, mlen) == 0)
        if (IS("secret_source.init")) {
            s = string_at(params ? member(params, "source_name") : NULL, &slen);
            if (!s)
                REPLY("error", "{\"kind\":\"other\",\"detail\":\"init needs a source_name\"}");
            else
                reply(idv, idlen, "result",
                      "{\"source_name\":\"%.*s\",\"capabilities_bits\":7,\"plugin_version\":\"1.0.0\"}", s, slen);
        } else if (IS("secret_source.is_available")) {
            REPLY("result", "{\"status\":\"available\"}");
        } else if (IS("secret_source.list")) {
            REPLY("result", "{\"entries\":[{\"reference\":\"c/one\",\"display\":\"First\"},{\"reference\":\"c/two\"}]}");
        } else if (IS("secret_source.get") || IS("secret_source.validate")) {
            s = string_at(params ? member(params, "reference") : NULL, &slen);
            if (!s) {
                REPLY("error", "{\"kind\":\"other\",\"detail\":\"a reference is needed\"}");
            } else if (IS("secret_source.validate")) {
                REPLY("result", slen ? "{\"ok\":true}" : "{\"ok\":false}");
            } else if (slen == 7 && memcmp(s, "missing", 7) == 0) {
                reply(idv, idlen, "error",
                      "{\"kind\":\"bad-reference\",\"reference\":\"%.*s\",\"reason\":\"not found\"}", s, slen);
            } else {
                reply(idv, idlen, "result", "{\"value\":\"echo:%.*s\"}", s, slen);
            }
        } else {
            reply(idv, idlen, "error", "{\"kind\":\"unsupported-capability\",\"capability\":\"%.*s\"}", m, mlen);
        }
#undef IS
    }
    free(line);
    return 0;
}
