"""gRPC through ringmux with Python's grpcio, no generated code (raw bytes
for messages), for tests/upstream_h2.rs.

  grpc_echo.py serve         a server on 127.0.0.1 (prints `listening on
                             HOST:PORT`): /test.Echo/Say answers its request
                             reversed; /test.Echo/Fail aborts NOT_FOUND with
                             the request as details; /test.Echo/Count streams
                             back N messages
  grpc_echo.py call ADDR     the calls through ADDR (h2c), one line each
"""

import sys
from concurrent import futures

import grpc


def serve():
    def say(request, context):
        return request[::-1]

    def fail(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, request.decode())

    def count(request, context):
        for i in range(int(request)):
            yield f"message {i}".encode()

    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Count": grpc.unary_stream_rpc_method_handler(count),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


def call(addr):
    with grpc.insecure_channel(addr) as ch:
        say = ch.unary_unary("/test.Echo/Say")
        print("say", say(b"hello grpc", timeout=5).decode(), flush=True)
        big = bytes(range(256)) * 1000
        print("big", say(big, timeout=5) == big[::-1], flush=True)
        try:
            ch.unary_unary("/test.Echo/Fail")(b"no such thing", timeout=5)
            print("fail none", flush=True)
        except grpc.RpcError as e:
            print("fail", e.code().name, e.details(), flush=True)
        got = list(ch.unary_stream("/test.Echo/Count")(b"5", timeout=5))
        print("count", len(got), got[-1].decode(), flush=True)
        calls = [say.future(f"n{i}".encode(), timeout=5) for i in range(20)]
        print("many", all(c.result() == f"n{i}".encode()[::-1] for i, c in enumerate(calls)),
              flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve()
    else:
        call(sys.argv[2])
