"""A small file in the AI4I 2020 predictive maintenance data set's column layout, written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

AI4I_COLUMNS = ["UDI", "Product ID", "Type", "Air temperature [K]", "Process temperature [K]",
                "Rotational speed [rpm]", "Torque [Nm]", "Tool wear [min]", "Machine failure",
                "TWF", "HDF", "PWF", "OSF", "RNF"]
WEAR_STEP = {"L": 2, "M": 3, "H": 5}
"""Minutes of tool wear one product adds, by quality variant (as in the data set)."""


def write_ai4i(path: Path, lives: list[int], failures: dict[int, str], seed: int = 0) -> pd.DataFrame:
    """``lives[k]`` rows per tool life (tool wear restarts at 0 for each); ``failures``: row -> failure mode
    (TWF, HDF, PWF, OSF or RNF) flagged with ``Machine failure`` 1. Returns the frame it wrote."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    for length in lives:
        wear = 0
        for _ in range(length):
            udi = len(rows) + 1
            quality = str(rng.choice(["L", "M", "H"], p=[0.6, 0.3, 0.1]))
            mode = failures.get(len(rows))
            rows.append({
                "UDI": udi, "Product ID": f"{quality}{47000 + udi}", "Type": quality,
                "Air temperature [K]": round(float(rng.normal(300.0, 2.0)), 1),
                "Process temperature [K]": round(float(rng.normal(310.0, 1.5)), 1),
                "Rotational speed [rpm]": int(rng.normal(1540, 180)),
                "Torque [Nm]": round(float(rng.normal(40, 10)), 1),
                "Tool wear [min]": wear, "Machine failure": int(mode is not None),
                **{m: int(mode == m) for m in ("TWF", "HDF", "PWF", "OSF", "RNF")},
            })
            wear += WEAR_STEP[quality]
    frame = pd.DataFrame(rows, columns=AI4I_COLUMNS)
    frame.to_csv(path, index=False)
    return frame
