"""Write events.csv: an invented but plausible machine log for the "new domain" example.

Forty production runs of six hydraulic presses. Each run starts, warms up, then works
through press cycles; each cycle logs a temperature and a pressure reading. A hot press
raises an overheat alarm, an operator answers it with a cool-down, and some runs end in
a jam. Timestamps are day-first (`31/01/2024 08:00:05`) with a `seq` column for events
logged in the same second, as such logs often are. Four rows carry the glitches real
logs have (a sensor writing `ERR`, a row that lost its run id, an impossible date), so that the
example also shows the reject log.

Run from the repository root: `python examples/new_domain/make_events.py`.
The output is fixed by the seed, so re-running it gives the same file.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
MACHINES = {f"press-{i:02d}": ("line-A" if i <= 3 else "line-B") for i in range(1, 7)}
HEADER = ["run_id", "machine", "line", "timestamp", "seq", "family", "event", "reading"]
TIME_FORMAT = "%d/%m/%Y %H:%M:%S"


def one_run(rng: random.Random, run_id: str, machine: str, start: dt.datetime) -> list[list]:
    rows: list[list] = []
    clock = start
    seq = -1  # the first event is number 0 of its second

    def log(gap_s: float, family: str, event: str, reading: float | str | None = None) -> None:
        nonlocal clock, seq
        step = dt.timedelta(seconds=round(gap_s))
        seq = seq + 1 if step.total_seconds() == 0 else 0
        clock += step
        stamp = clock.strftime(TIME_FORMAT)
        value = "" if reading is None else reading
        rows.append([run_id, machine, MACHINES[machine], stamp, seq, family, event, value])

    log(0, "STATE", "START")
    log(rng.uniform(30, 90), "STATE", "WARMUP")
    temperature = rng.uniform(38, 45)
    for _ in range(rng.randint(8, 30)):
        log(rng.uniform(20, 40), "CYCLE", "BEGIN")
        # Each cycle heats the press; a hot press cools more slowly.
        temperature += rng.gauss(1.6, 0.8)
        log(rng.uniform(5, 9), "SENSOR", "TEMP_C", round(temperature, 1))
        log(0, "SENSOR", "PRESSURE_BAR", round(rng.gauss(180 + temperature / 4, 6), 1))
        if temperature > 68:
            log(1, "ALARM", "OVERHEAT")
            log(rng.uniform(20, 60), "OPERATOR", "COOLDOWN")
            temperature -= rng.uniform(15, 25)
        if rng.random() < 0.02:
            log(rng.uniform(1, 5), "ALARM", "JAM")
            log(rng.uniform(60, 300), "OPERATOR", "CLEAR_JAM")
        log(rng.uniform(10, 20), "CYCLE", "END")
    log(rng.uniform(30, 120), "STATE", "STOP")
    return rows


def main() -> None:
    rng = random.Random(7)
    rows: list[list] = []
    day = dt.datetime(2024, 1, 29, 6, 0, 0)
    for number in range(40):
        machine = rng.choice(sorted(MACHINES))
        start = day + dt.timedelta(days=number // 8, minutes=rng.randint(0, 600))
        rows.extend(one_run(rng, f"run-{number:03d}", machine, start))
    # The glitches: two sensor read errors, a row with no run id, an impossible date.
    readings = [i for i, r in enumerate(rows) if r[6] == "TEMP_C"]
    rows[readings[10]][7] = "ERR"
    rows[readings[200]][7] = "ERR"
    rows[readings[300] + 1][0] = ""
    rows[readings[400]][3] = "31/02/2024 10:15:00"
    with (HERE / "events.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows)


if __name__ == "__main__":
    main()
