"""Demo: a sandboxed script that calls a granted binding and computes something.

Run with `make demo`. The script below is what a model might write; it can reach
nothing but `tools.get_weather`, and it runs under a 2 s / 64 MiB budget.
"""

from __future__ import annotations

import asyncio

from clambot_tools import Limits, Policy, Sandbox, binding


@binding(description="Current weather for a city (a stand-in for a real API).")
async def get_weather(city: str) -> dict[str, object]:
    await asyncio.sleep(0.05)  # pretend to call a service
    temps = {"Paris": 18.5, "Oslo": 4.0, "Lima": 22.0}
    if city not in temps:
        raise ValueError(f"unknown city: {city}")
    return {"city": city, "temp_c": temps[city]}


SCRIPT = """
const cities = ['Paris', 'Oslo', 'Lima'];
// three tool calls, run concurrently on the host
const reports = await Promise.all(cities.map((city) => tools.get_weather({ city })));
console.log('fetched', reports.length, 'reports');
const warmest = reports.reduce((a, b) => (a.temp_c > b.temp_c ? a : b));
const meanF = reports.reduce((s, r) => s + r.temp_c * 9 / 5 + 32, 0) / reports.length;
({ warmest: warmest.city, mean_f: Math.round(meanF * 10) / 10 })
"""


def main() -> None:
    sandbox = Sandbox(
        bindings=[get_weather],
        limits=Limits(timeout_s=2, memory_mb=64),
        policy=Policy(allow=["get_weather"]),
    )
    result = sandbox.run(SCRIPT)
    print(result.model_dump_json(indent=2))
    broken = sandbox.run("const x = await tools.get_weather({ city: 'Atlantis' });\nx.temp_c")
    print("\nA failing tool call comes back as a structured error:")
    print(broken.error)


if __name__ == "__main__":
    main()
