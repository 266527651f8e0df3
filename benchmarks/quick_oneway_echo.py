"""One-way throughput (200,000 small tuples, worker to master) and echo latency (1,000 round trips).

Run it with the interpreter of each side: ``python benchmarks/quick_oneway_echo.py``.
"""

import time

import execnet

N = 200_000

gw = execnet.makegateway()
start = time.perf_counter()
ch = gw.remote_exec("for i in range(%d): channel.send((i, 'abc', 1.5))" % N)
for _ in range(N):
    ch.receive()
oneway = time.perf_counter() - start

ch = gw.remote_exec("for x in channel: channel.send(x)")
start = time.perf_counter()
for i in range(1000):
    ch.send(i)
    ch.receive()
echo = time.perf_counter() - start
print(f"{execnet.__version__} one-way {N / oneway:.0f} msg/s  echo {echo * 1000:.1f} us")
gw.exit()
