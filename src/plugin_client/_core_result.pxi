# _core.pyx includes this (one extension, one namespace). split_result: the
# head of a success reply, compared as bytes.

# The one protocol fact the core holds, as bytes: the head of a success reply
# as this library's SDK and serde_json write it. No JSON is parsed here.
cdef const char *RESULT_HEAD = b'{"jsonrpc":"2.0","id":'
cdef const char *RESULT_MID = b',"result":'
cdef enum:
    RESULT_HEAD_LEN = 22
    RESULT_MID_LEN = 10


def split_result(frame, request_id):
    """The result bytes of a success reply to ``request_id``, or ``None``."""
    cdef const char *p
    cdef Py_ssize_t n, k, at
    cdef char digits[24]
    cdef unsigned long long v
    if type(frame) is not bytes:  # exactly bytes, as frames are
        raise TypeError(f"split_result() needs bytes, not {type(frame).__name__}")
    v = PyNumber_Index(request_id)  # OverflowError outside 0..2**64-1
    p = PyBytes_AS_STRING(frame)
    n = PyBytes_GET_SIZE(frame)
    k = 24
    while True:  # request_id in decimal, as %d writes it, at digits[k:24]
        k -= 1
        digits[k] = <char>(c'0' + <int>(v % 10))
        v //= 10
        if v == 0:
            break
    at = RESULT_HEAD_LEN + (24 - k) + RESULT_MID_LEN
    if (
        n <= at
        or p[n - 1] != c'}'
        or memcmp(p, RESULT_HEAD, RESULT_HEAD_LEN) != 0
        or memcmp(p + RESULT_HEAD_LEN, digits + k, <size_t>(24 - k)) != 0
        or memcmp(p + RESULT_HEAD_LEN + (24 - k), RESULT_MID, RESULT_MID_LEN) != 0
    ):
        return None
    return PyBytes_FromStringAndSize(p + at, n - 1 - at)
