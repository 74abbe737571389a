"""Hostile input: hypothesis sends malformed requests, as raw bytes below the stubs, to every RPC.

Requests are encoded by hand (so they can be wrong in ways the generated
classes refuse to produce): random bytes, truncated and bit-flipped messages,
non-UTF-8 bytes in string fields, out-of-range enums, huge page sizes and
durations, oversized strings, unknown and foreign job ids, pickles that do not
load or raise while loading, JSON arguments nested hundreds of levels
deep, JSON arguments past the server's bounds (``--max-argument-bytes``,
``--max-argument-values``, the built-ins' own), and uploads past the upload
bounds (``--max-uploads-per-caller``, ``--max-upload-bytes-per-caller``,
``--max-upload-bytes``: headers announcing too much, streams of many chunks past
them). Each answer must be a clean status (never INTERNAL or UNKNOWN), the
server must stay up and SERVING, and jobs accepted before and after the run
must finish with their right results; each input past a bound gets the code
that bound answers, with a message naming it, and a ``ping`` works after it.

The server runs with tokens, so the fuzz goes through authentication too, as
callers with and without the ``code`` permission, with no token and with junk
tokens.
"""

from __future__ import annotations

import collections
import hashlib
import operator
import os
import pickle
import re
import struct
import sys
import threading
import urllib.request

import cloudpickle
import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import free_port, inc, running_server, wait_until

pytestmark = pytest.mark.integration

ALICE = "alice-fuzz-token-0123456789"  # run,code
BOB = "bob-fuzz-token-0123456789ab"  # run
CAROL = "carol-fuzz-token-0123456789"  # run,code (only for uploads beside alice's)
SERVICE = pb.DESCRIPTOR.services_by_name["ComputeService"]
#: Every RPC of the service, as the descriptor lists them (new RPCs join the fuzz).
METHODS = tuple(m.name for m in SERVICE.methods)
STREAMING = frozenset(m.name for m in SERVICE.methods if m.server_streaming)
UPLOADS = frozenset(m.name for m in SERVICE.methods if m.client_streaming)
JOB_ID_METHODS = ("GetJob", "WaitJob", "CancelJob", "WatchJob", "GetJobResult", "ReleaseJob")
#: Statuses a malformed request may get. INTERNAL and UNKNOWN mean the server
#: did not understand its own failure; DEADLINE_EXCEEDED would mean it hung.
CLEAN = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "500")),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

#: The fuzz server's bounds of JSON arguments (--max-argument-bytes, --max-argument-values).
MAX_BYTES = 1024 * 1024
MAX_VALUES = 2000
#: The fuzz server's --max-upload-bytes-per-caller: uploads' headers announce up to 1 MiB.
MAX_UPLOAD_BYTES = 512 * 1024
#: Its --max-upload-bytes (all callers' uploads together) and --max-uploads-per-caller.
MAX_ALL_UPLOAD_BYTES = 768 * 1024
MAX_UPLOADS = 4

TRIED = {"inputs": 0}
CODES: collections.Counter = collections.Counter()  # (method, status) -> count, printed at the end
KNOWN_IDS: list[str] = []  # a finished job of alice's for the fuzz to aim at, filled by the fixture


# -- the wire format, by hand -------------------------------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64 are ten-byte varints
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def vint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def ld(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def double(number: int, value: float) -> bytes:
    return varint(number << 3 | 1) + struct.pack("<d", value)


# google.protobuf.Value / ListValue / Struct
def json_value(value) -> bytes:
    if value is None:
        return vint(1, 0)
    if isinstance(value, bool):
        return vint(4, int(value))
    if isinstance(value, (int, float)):
        return double(2, float(value))
    if isinstance(value, (str, bytes)):
        return ld(3, value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value)
    if isinstance(value, list):
        return ld(6, list_value(value))
    return ld(5, struct_value(value))


def list_value(items) -> bytes:
    return b"".join(ld(1, json_value(v)) for v in items)


def struct_value(mapping) -> bytes:
    return b"".join(
        ld(1, ld(1, k.encode("utf-8", "surrogatepass")) + ld(2, json_value(v)))
        for k, v in mapping.items()
    )


def nested(depth: int, kind: str) -> bytes:
    """A ListValue (or Struct) nested ``depth`` levels, encoded without recursion limits."""
    value = double(2, 1.0)
    for _ in range(depth):
        value = ld(6, ld(1, value)) if kind == "list" else ld(5, ld(1, ld(1, b"k") + ld(2, value)))
    return ld(1, value) if kind == "list" else ld(1, ld(1, b"k") + ld(2, value))


# -- hostile values -------------------------------------------------------------------


def mostly(valid, hostile):
    """``valid`` three times in four, so requests also get past parsing to the core's checks."""
    return st.one_of(valid, valid, valid, hostile)


enums = mostly(st.integers(0, 4), st.integers(-(2**31), 2**31 - 1))
int64s = st.integers(-(2**63), 2**63 - 1)
utf8 = st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass"))
strings = mostly(
    utf8,
    st.one_of(
        st.binary(max_size=40),  # mostly not UTF-8
        st.integers(200, 300_000).map(lambda n: b"a" * n),  # oversized
        st.sampled_from(
            [b"\xff\xfe", b"\xc0\x80", b"\xed\xa0\x80", b"\x00", "é".encode("latin-1")]
        ),
    ),
)
durations = mostly(
    st.tuples(st.integers(0, 2), st.integers(0, 999_999_999)),
    st.tuples(int64s, st.integers(-(2**31), 2**31 - 1)),
).map(lambda t: vint(1, t[0]) + vint(2, t[1]))
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**60), 2**60),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _raises_on_load(exc_factory):
    class Raises:
        def __reduce__(self):
            return exc_factory

    return cloudpickle.dumps(Raises())


GOOD_CALL = cloudpickle.dumps((inc, (1,), {}))
NASTY_PICKLES = [
    _raises_on_load((int, ("not a number",))),  # ValueError
    _raises_on_load((operator.truediv, (1, 0))),  # ZeroDivisionError
    _raises_on_load((sys.exit, (3,))),  # SystemExit: must not stop the server
    _raises_on_load((getattr, (object(), "no_such_attribute"))),  # AttributeError
    pickle.dumps(operator.add).replace(b"_operator", b"no_such_m"),  # ModuleNotFoundError
    pickle.dumps(12345),  # loads, but is not a call
    pickle.dumps((1, 2, 3)),
    pickle.dumps([[[[]]]] * 3),
    GOOD_CALL[: len(GOOD_CALL) // 2],  # truncated
    b"",
    b"not a pickle at all",
]
payloads = st.one_of(
    st.sampled_from(NASTY_PICKLES),
    st.binary(max_size=200),
    st.tuples(st.integers(0, len(GOOD_CALL)), st.integers(0, 255)).map(
        lambda t: GOOD_CALL[: t[0]] + bytes([t[1]]) + GOOD_CALL[t[0] + 1 :]
    ),
)


@st.composite
def function_calls(draw) -> bytes:
    name = draw(st.one_of(st.sampled_from([b"ping", b"add", b"nope", b""]), strings))
    body = ld(1, name)
    args = draw(
        st.one_of(
            st.lists(json_values, max_size=4).map(list_value),
            st.tuples(st.integers(1, 400), st.sampled_from(["list", "struct"])).map(
                lambda t: nested(*t)
            ),
            st.binary(max_size=30),
            # past the fuzz server's bounds: too many values, too many bytes
            st.integers(MAX_VALUES - 5, MAX_VALUES + 50).map(lambda n: list_value([None] * n)),
            st.integers(MAX_BYTES - 5000, MAX_BYTES + 5000).map(
                lambda n: list_value(["x" * 1000] * (n // 1006))
            ),
        )
    )
    body += ld(2, args)
    if draw(st.booleans()):
        body += ld(
            3,
            draw(
                st.one_of(
                    st.dictionaries(st.text(max_size=10), json_values, max_size=4).map(
                        struct_value
                    ),
                    st.tuples(st.integers(1, 400), st.sampled_from(["struct", "list"])).map(
                        lambda t: nested(*t)
                    ),
                )
            ),
        )
    return body


@st.composite
def job_specs(draw) -> bytes:
    kind = draw(st.sampled_from([1, 1, 2, 3, 0]))
    spec = b""
    if kind == 1:
        spec += ld(1, draw(function_calls()))
    elif kind in (2, 3):
        serializer = vint(2, draw(mostly(st.integers(0, 1), enums))) if draw(st.booleans()) else b""
        spec += ld(kind, ld(1, draw(payloads)) + serializer)
    for number in (4, 5):
        if draw(st.booleans()):
            spec += vint(number, draw(enums))
    for number in (6, 7):
        if draw(st.booleans()):
            spec += ld(number, draw(strings))
    if draw(st.booleans()):
        spec += vint(8, draw(st.integers(0, 2**64 - 1)))
    if draw(st.booleans()):
        spec += ld(9, draw(durations))
    return spec


@st.composite
def requests(draw) -> tuple[str, bytes]:
    method = draw(st.sampled_from(METHODS))
    body = b""
    if method in ("Run", "SubmitJob"):
        body = ld(1, draw(job_specs()))
    elif method == "SubmitJobs":
        body = b"".join(ld(1, spec) for spec in draw(st.lists(job_specs(), max_size=4)))
    elif method in JOB_ID_METHODS:
        job_id = draw(
            st.one_of(
                strings,
                st.sampled_from(KNOWN_IDS or [b"x"]).map(
                    lambda i: i if isinstance(i, bytes) else i.encode()
                ),
            )
        )
        body = ld(1, job_id)
        if method == "WaitJob":
            if draw(st.booleans()):
                body += ld(2, draw(durations))
            if draw(st.booleans()):
                body += vint(3, draw(enums))
        elif method == "CancelJob" and draw(st.booleans()):
            body += ld(2, draw(strings))
        elif method == "GetJobResult":
            body += vint(2, draw(enums)) if draw(st.booleans()) else b""
            body += (
                vint(3, draw(mostly(st.integers(0, 100), int64s))) if draw(st.booleans()) else b""
            )
            body += (
                vint(4, draw(mostly(st.integers(0, 2**20), st.integers(-(2**31), 2**31 - 1))))
                if draw(st.booleans())
                else b""
            )
            body += vint(5, draw(st.integers(0, 1))) if draw(st.booleans()) else b""
    elif method in ("GetObject", "DeleteObject"):
        body = ld(1, draw(strings))
    elif method in UPLOADS:
        # Messages of the stream, separated by the RS byte (see send); a
        # header (sha256, size, segment sizes, serializer) first, usually.
        header = ld(1, draw(strings)) + vint(2, draw(mostly(st.integers(0, 2**20), int64s)))
        header += b"".join(
            vint(3, n) for n in draw(st.lists(mostly(st.integers(0, 100), int64s), max_size=4))
        )
        header += vint(4, draw(enums))
        messages = [ld(1, header)] if draw(st.booleans()) else []
        messages += [ld(2, chunk) for chunk in draw(st.lists(st.binary(max_size=64), max_size=3))]
        body = RS.join(messages)
    elif method == "ListJobs":
        states = draw(st.lists(enums, max_size=6))
        if states and draw(st.booleans()):
            body += ld(1, b"".join(varint(s) for s in states))  # packed
        else:
            body += b"".join(vint(1, s) for s in states)
        if draw(st.booleans()):
            body += vint(
                2,
                draw(
                    st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([2**31 - 1, -1, 0]))
                ),
            )
        if draw(st.booleans()):
            body += ld(3, draw(strings))
    elif draw(st.booleans()):
        body = draw(st.binary(max_size=20))  # the empty requests, with junk fields
    return method, body


tokens = st.sampled_from([ALICE, ALICE, BOB, BOB, None, "junk", "Bearer", ALICE + "x"])


# -- the server ---------------------------------------------------------------------------------

#: The fuzz server's Prometheus port (its PutObject byte count says when held uploads are taken).
METRICS: dict[str, int] = {}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    tokens_file = directory / "tokens"
    tokens_file.write_text(f"alice run,code {ALICE}\nbob run {BOB}\ncarol run,code {CAROL}\n")
    tokens_file.chmod(0o600)
    args = [
        "--no-processes",
        "--n-workers",
        "1",
        "--threads-per-worker",
        "4",
        "--dashboard-address",
        "",
        "--local-processes",
        "1",
        "--local-threads",
        "4",
        "--tokens-file",
        str(tokens_file),
        "--max-message-bytes",
        str(8 * 1024 * 1024),
        "--max-argument-bytes",
        str(MAX_BYTES),
        "--max-argument-values",
        str(MAX_VALUES),
        "--max-upload-bytes-per-caller",
        str(MAX_UPLOAD_BYTES),
        "--max-upload-bytes",
        str(MAX_ALL_UPLOAD_BYTES),
        "--max-uploads-per-caller",
        str(MAX_UPLOADS),
        "--metrics-port",
        str(METRICS.setdefault("port", free_port())),
    ]
    with running_server(args, directory / "server.log") as server:
        yield server
    print(f"\nfuzz: {TRIED['inputs']} inputs tried")


@pytest.fixture(scope="module")
def channel(fuzz_server):
    with grpc.insecure_channel(
        fuzz_server.target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch


def _metadata(token):
    return (
        None
        if token is None
        else (("authorization", token if token == "Bearer" else f"Bearer {token}"),)
    )


@pytest.fixture(scope="module")
def before(channel):
    """Jobs accepted before the fuzz: one still running through it, one finished."""
    stub = pb_grpc.ComputeServiceStub(channel)
    spec = pb.JobSpec(call=pb.FunctionCall(function="sleep"))
    spec.call.args.append(8)
    running = stub.SubmitJob(
        pb.SubmitJobRequest(job=spec), metadata=_metadata(ALICE), timeout=30
    ).job
    payload = cloudpickle.dumps((inc, (41,), {}))
    done = stub.Run(
        pb.RunRequest(
            job=pb.JobSpec(
                pickled_call=pb.PickledCall(payload=payload), scheduler=pb.SCHEDULER_THREADS
            )
        ),
        metadata=_metadata(ALICE),
        timeout=30,
    ).job
    # The fuzz aims at a job of its own (it may cancel or release it), not at these.
    target = stub.Run(
        pb.RunRequest(job=pb.JobSpec(call=pb.FunctionCall(function="ping"))),
        metadata=_metadata(ALICE),
        timeout=30,
    )
    KNOWN_IDS.append(target.job.job_id)
    return running, done


#: Separates the messages of a request stream in a fuzzed body.
RS = b"\x1e"


def send(channel, server, method: str, body: bytes, token) -> grpc.StatusCode:
    path = f"/{SERVICE.full_name}/{method}"
    TRIED["inputs"] += 1
    try:
        if method in UPLOADS:
            kind = channel.stream_stream if method in STREAMING else channel.stream_unary
            call = kind(path, request_serializer=None, response_deserializer=None)
            result = call(
                iter(body.split(RS) if body else []), metadata=_metadata(token), timeout=20
            )
            if method in STREAMING:
                for _ in result:
                    pass
        elif method in STREAMING:
            call = channel.unary_stream(path, request_serializer=None, response_deserializer=None)
            for _ in call(body, metadata=_metadata(token), timeout=20):
                pass
        else:
            call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
            call(body, metadata=_metadata(token), timeout=20)
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()
        assert code in CLEAN, f"{method} answered {code}: {exc.details()} (request {body[:200]!r})"
        if (
            code == grpc.StatusCode.RESOURCE_EXHAUSTED
        ):  # a limit of the server's, not of the client's
            details = exc.details()
            assert "max_" in details or "--max-" in details or "larger than max" in details, details
    CODES[method, code.name] += 1
    assert server.process.poll() is None, (
        f"the server died on {method} {body[:200]!r}:\n{server.log()[-3000:]}"
    )
    return code


# -- the tests ----------------------------------------------------------------------------------


@FUZZ
@given(method=st.sampled_from(METHODS), body=st.binary(max_size=300), token=tokens)
def test_random_bytes(channel, fuzz_server, before, method, body, token):
    send(channel, fuzz_server, method, body, token)


@FUZZ
@given(request=requests(), token=tokens)
def test_hostile_messages(channel, fuzz_server, before, request, token):
    send(channel, fuzz_server, *request, token)


@FUZZ
@given(
    request=requests(), cut=st.integers(0, 2**16), flip=st.one_of(st.none(), st.integers(0, 2**16))
)
def test_truncated_and_flipped_messages(channel, fuzz_server, before, request, cut, flip):
    method, body = request
    body = body[: cut % (len(body) + 1)]
    if flip is not None and body:
        index = flip % len(body)
        body = body[:index] + bytes([body[index] ^ 0xFF]) + body[index + 1 :]
    send(channel, fuzz_server, method, body, ALICE)


@FUZZ
@given(value=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80))
def test_junk_authorization_headers(channel, fuzz_server, value):
    call = channel.unary_unary(
        "/compute.v1.ComputeService/ListJobs", request_serializer=None, response_deserializer=None
    )
    TRIED["inputs"] += 1
    with pytest.raises(grpc.RpcError) as info:
        call(b"", metadata=(("authorization", value),), timeout=20)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("depth", [30, 48, 49, 100, 1000, 20000])
@pytest.mark.parametrize("kind", ["list", "struct"])
def test_deeply_nested_json_arguments(channel, fuzz_server, before, depth, kind):
    # protobuf's parser stops at 100 nested messages: past it (about 48 levels
    # of JSON lists) the request is INVALID_ARGUMENT; below it the function
    # gets (and refuses) the argument.
    body = ld(1, ld(1, ld(1, b"ping") + ld(2 if kind == "list" else 3, nested(depth, kind))))
    assert send(channel, fuzz_server, "Run", body, ALICE) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("method", ["Run", "SubmitJob", "SubmitJobs"])
@pytest.mark.parametrize(
    "call, bound",
    [
        (ld(1, b"ping") + ld(2, list_value([None] * (MAX_VALUES + 1))), "--max-argument-values"),
        (
            ld(1, b"add")
            + ld(3, struct_value({"a": [1] * (MAX_VALUES // 2), "b": [2] * (MAX_VALUES // 2)})),
            "--max-argument-values",
        ),
        (
            ld(1, b"ping") + ld(2, list_value(["x" * 1000] * (MAX_BYTES // 1000))),
            "--max-argument-bytes",
        ),
        (
            ld(1, b"pi") + ld(3, struct_value({"samples": 4e8, "chunks": 4e8})),
            "chunks must be at most 1,000,000",
        ),
        (
            ld(1, b"pi") + ld(2, list_value([1e10 + 1, 1e6])),
            "samples must be at most 10,000,000,000",
        ),
        (
            ld(1, b"pi") + ld(3, struct_value({"samples": 1e9, "chunks": 10})),
            "at most 10,000 chunks",
        ),
    ],
    ids=["values", "values-in-kwargs", "bytes", "pi-chunk-size", "pi-samples", "pi-chunk-count"],
)
def test_arguments_past_the_bounds_are_invalid_arguments_naming_them(
    channel, fuzz_server, before, method, call, bound
):
    spec = ld(1, call)
    body = ld(1, spec) if method != "SubmitJobs" else ld(1, ld(1, ld(1, b"ping"))) + ld(1, spec)
    stub_call = channel.unary_unary(
        f"/{SERVICE.full_name}/{method}", request_serializer=None, response_deserializer=None
    )
    TRIED["inputs"] += 1
    with pytest.raises(grpc.RpcError) as info:
        stub_call(body, metadata=_metadata(BOB), timeout=20)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert bound in info.value.details()
    assert_serving(channel, fuzz_server)


def assert_serving(channel, server) -> None:
    """A ``ping`` still runs: the server is up and serving after what was sent."""
    stub = pb_grpc.ComputeServiceStub(channel)
    response = stub.Run(
        pb.RunRequest(job=pb.JobSpec(call=pb.FunctionCall(function="ping"))),
        metadata=_metadata(BOB),
        timeout=30,
    )
    assert (
        response.job.state == pb.JOB_STATE_SUCCEEDED
        and json_format.MessageToDict(response.result.json) == "pong"
    )
    assert server.process.poll() is None


def upload_stream(
    size: int, chunks: int, announce: int | None = None, hold: threading.Event | None = None
):
    """Raw PutObject messages: a header announcing ``announce`` (default ``size``) bytes,
    then ``size`` bytes in ``chunks`` chunks; with ``hold``, the stream then stays open until it is set."""
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    yield ld(1, ld(1, sha.encode()) + vint(2, size if announce is None else announce))
    step = -(-size // chunks) if size else 1
    for start in range(0, size, step):
        yield ld(2, data[start : start + step])
    if hold is not None:
        hold.wait(60)


def put_object_bytes_received() -> float:
    """The PutObject chunk bytes the fuzz server has taken (each is counted against the
    upload bounds as it is taken)."""
    with urllib.request.urlopen(
        f"http://127.0.0.1:{METRICS['port']}/metrics", timeout=10
    ) as response:
        text = response.read().decode()
    match = re.search(
        r'^dask_compute_received_bytes_total\{method="PutObject"\} ([0-9.e+]+)$', text, re.MULTILINE
    )
    return float(match.group(1)) if match else 0.0


KiB = 1024
#: Uploads past the upload bounds. Each: the uploads held open first (token, bytes
#: sent of one more announced), then the refused one (token, bytes, chunks, bytes
#: announced), and the code and words of its answer.
UPLOADS_PAST_THE_BOUNDS = {
    "header-past-a-callers-bound": (
        [],
        (ALICE, 100, 1, MAX_UPLOAD_BYTES + 1),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "(--max-upload-bytes-per-caller)",
    ),
    "header-announcing-exabytes": (
        [],
        (ALICE, 100, 1, 2**62),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "(max_object_bytes)",
    ),
    "more-chunks-than-announced": (
        [],
        (ALICE, 300 * KiB, 300, 100 * KiB),
        grpc.StatusCode.INVALID_ARGUMENT,
        "more than the 102400 bytes its header announced",
    ),
    "many-chunks-past-a-callers-bound": (
        [(ALICE, 300 * KiB)],
        (ALICE, 300 * KiB, 3000, None),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "(--max-upload-bytes-per-caller)",
    ),
    "many-chunks-past-all-uploads-bound": (
        [(ALICE, 400 * KiB)],
        (CAROL, 400 * KiB, 4000, None),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "(--max-upload-bytes)",
    ),
    "too-many-uploads-of-one-caller": (
        [(ALICE, 1)] * MAX_UPLOADS,
        (ALICE, 100, 1, None),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"(--max-uploads-per-caller={MAX_UPLOADS})",
    ),
}


@pytest.mark.parametrize("case", list(UPLOADS_PAST_THE_BOUNDS))
def test_uploads_past_the_bounds_are_refused_naming_them(channel, fuzz_server, before, case):
    held_open, (token, size, chunks, announce), code, words = UPLOADS_PAST_THE_BOUNDS[case]
    call = channel.stream_unary(
        f"/{SERVICE.full_name}/PutObject", request_serializer=None, response_deserializer=None
    )
    release = threading.Event()
    received = put_object_bytes_received()
    held = [
        call.future(
            upload_stream(sent, 1, sent + 1, hold=release), metadata=_metadata(who), timeout=60
        )
        for who, sent in held_open
    ]
    try:
        # Every byte of the held uploads is taken (so each was admitted), and they are still open.
        wait_until(
            lambda: (
                any(f.done() for f in held)
                or put_object_bytes_received() >= received + sum(n for _, n in held_open)
            ),
            message=f"the server to take the held uploads' bytes ({case})",
        )
        assert not any(f.done() for f in held), [f.exception() for f in held if f.done()]
        TRIED["inputs"] += 1
        with pytest.raises(grpc.RpcError) as info:
            call(upload_stream(size, chunks, announce), metadata=_metadata(token), timeout=60)
    finally:
        release.set()
    assert info.value.code() == code, info.value.details()
    assert words in info.value.details(), info.value.details()
    for future in held:  # each held upload then ended short of what it announced
        assert future.exception(timeout=30).code() == grpc.StatusCode.INVALID_ARGUMENT
    # Nothing of them is still counted: an upload as large as a caller may hold goes in.
    payload = pickle.dumps(os.urandom(MAX_UPLOAD_BYTES - 100))
    stub = pb_grpc.ComputeServiceStub(channel)
    messages = [
        pb.PutObjectRequest(
            header=pb.ObjectHeader(
                sha256=hashlib.sha256(payload).hexdigest(), size_bytes=len(payload)
            )
        )
    ]
    messages += [
        pb.PutObjectRequest(chunk=payload[i : i + 64 * KiB])
        for i in range(0, len(payload), 64 * KiB)
    ]
    assert stub.PutObject(
        iter(messages), metadata=_metadata(ALICE), timeout=60
    ).object.size_bytes == len(payload)
    assert_serving(channel, fuzz_server)


@pytest.mark.parametrize("number", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("field", [2, 3], ids=["args", "kwargs"])
def test_numbers_json_cannot_carry_are_invalid_arguments(
    channel, fuzz_server, before, number, field
):
    # Found by this fuzz: MessageToDict raised ValueError, answered INTERNAL.
    values = list_value([number]) if field == 2 else struct_value({"a": number})
    body = ld(1, ld(1, ld(1, b"add") + ld(field, values)))
    assert send(channel, fuzz_server, "Run", body, BOB) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "call",
    [
        ld(1, b"f" * 300_000),  # an unknown function's name is quoted back
        ld(1, b"add") + ld(2, list_value(["a" * 300_000, 1])),  # so is a wrong argument
        ld(1, b"add") + ld(3, struct_value({"k" * 300_000: 1})),  # and an unknown keyword
    ],
    ids=["function", "argument", "keyword"],
)
def test_messages_quoting_huge_input_are_truncated(channel, fuzz_server, before, call):
    # Found by this fuzz: the whole input went back in the status message, which
    # clients refuse past 16 KiB of metadata (RESOURCE_EXHAUSTED on their side).
    stub_call = channel.unary_unary(
        "/compute.v1.ComputeService/Run", request_serializer=None, response_deserializer=None
    )
    TRIED["inputs"] += 1
    with pytest.raises(grpc.RpcError) as info:
        stub_call(ld(1, ld(1, call)), metadata=_metadata(BOB), timeout=20)
    assert info.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), (
        info.value.details()
    )
    assert len(info.value.details().encode()) < 2100


@pytest.mark.parametrize("padding", [0, 70_000], ids=["inline", "in-a-thread"])
@pytest.mark.parametrize("work", ["pickled_call", "graph"])
@pytest.mark.parametrize("index", range(len(NASTY_PICKLES)))
def test_pickles_that_fail_or_raise_while_loading(
    channel, fuzz_server, before, index, work, padding
):
    # Every nasty pickle, deterministically, from a caller allowed to send code;
    # padding past 64 KiB makes the server load it in a thread.
    payload = NASTY_PICKLES[index] + b"\x00" * padding
    body = ld(1, ld(2 if work == "pickled_call" else 3, ld(1, payload)))
    code = send(channel, fuzz_server, "Run", body, ALICE)
    assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "scheduler", [pb.SCHEDULER_THREADS, pb.SCHEDULER_SYNCHRONOUS, pb.SCHEDULER_PROCESSES]
)
def test_a_job_calling_sys_exit_fails_and_the_server_stays(channel, fuzz_server, before, scheduler):
    # SystemExit raised in a pool thread or process reaches the server's event
    # loop through a future; it must fail the job, not stop the server.
    stub = pb_grpc.ComputeServiceStub(channel)
    spec = pb.JobSpec(
        pickled_call=pb.PickledCall(payload=cloudpickle.dumps((sys.exit, (3,), {}))),
        scheduler=scheduler,
    )
    TRIED["inputs"] += 1
    response = stub.Run(pb.RunRequest(job=spec), metadata=_metadata(ALICE), timeout=30)
    assert response.job.state == pb.JOB_STATE_FAILED
    assert (
        response.job.error.type == "builtins.RuntimeError"
        and "SystemExit(3,)" in response.job.error.message
    )
    assert fuzz_server.process.poll() is None


def test_the_server_survived_and_jobs_are_unaffected(channel, fuzz_server, before):
    # The last test of the module (pytest keeps file order): check what the fuzz left.
    stub = pb_grpc.ComputeServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(
        health_pb2.HealthCheckRequest(service="compute.v1.ComputeService"), timeout=10
    ).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    running, done = before
    metadata = _metadata(ALICE)
    waited = stub.WaitJob(
        pb.WaitJobRequest(job_id=running.job_id, timeout={"seconds": 30}),
        metadata=metadata,
        timeout=40,
    )
    assert (
        waited.job.state == pb.JOB_STATE_SUCCEEDED
        and json_format.MessageToDict(waited.result.json) == 8
    )
    waited = stub.WaitJob(pb.WaitJobRequest(job_id=done.job_id), metadata=metadata, timeout=30)
    assert waited.job.state == pb.JOB_STATE_SUCCEEDED and pickle.loads(waited.result.pickle) == 42
    after = stub.Run(
        pb.RunRequest(
            job=pb.JobSpec(pickled_call=pb.PickledCall(payload=cloudpickle.dumps((inc, (1,), {}))))
        ),
        metadata=metadata,
        timeout=30,
    )
    assert after.job.state == pb.JOB_STATE_SUCCEEDED and pickle.loads(after.result.pickle) == 2
    log = fuzz_server.log()
    assert "failed unexpectedly" not in log and "Traceback" not in log, log[-5000:]
    assert TRIED["inputs"] >= 2000
    sys.stderr.write(f"\nfuzz: {TRIED['inputs']} inputs tried; answers: {sorted(CODES.items())}\n")
