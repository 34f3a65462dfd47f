"""Window results: the dataclass the loop consumes and the ``window_results`` table that keeps them.

One shape for both kinds of window. A ``drift`` window fills the drift fields (share of drifted
features, their names, Evidently's dataset-drift verdict, prediction drift, and the calibrated
statistic, its threshold and the verdict ``drifted``); a ``performance`` window fills ``metrics``
(f1, precision, recall, accuracy, roc_auc when both classes occur, positive_rate,
predicted_positive_rate, n_labelled, n_positive, judged: see :func:`mlops.monitor.drift.performance`).
Both carry the model version, the event-time span, the scored readings' offsets and the report files.

The table is not part of the audit trail (:mod:`mlops.store.audit`) but lives in the same database
(``settings.database_url``); :func:`engine_for` creates it if needed. Errors are
:class:`~mlops.store.base.DatabaseError`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Text,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from mlops.clock import as_utc, utc_now
from mlops.config import Settings
from mlops.store.base import Base, DatabaseError, get_engine

__all__ = ["WindowResult", "WindowResultRow", "engine_for", "list_results", "save", "set_reports"]


@dataclass(frozen=True)
class WindowResult:
    """What one closed window says about the serving model."""

    kind: Literal["drift", "performance"]
    model_name: str
    model_version: str
    start_time: datetime
    end_time: datetime
    n_predictions: int
    source_offsets: dict[str, list[int]]
    """``"topic:partition" -> [first, last]`` offset of the readings the window's predictions scored."""
    drift_share: float | None = None
    drifted_features: list[str] = field(default_factory=list)
    dataset_drift: bool | None = None
    prediction_drift: float | None = None
    drift_score: float | None = None
    """The calibrated drift statistic of the window (:mod:`mlops.monitor.calibration`)."""
    drift_threshold: float | None = None
    """The calibrated threshold ``drift_score`` was judged against (the model version's own)."""
    drifted: bool | None = None
    """The drift verdict the policy reads: ``drift_score >= drift_threshold``; None when the model
    version has no calibration (then ``drift_share >= policy.drift_threshold`` decides)."""
    metrics: dict[str, float] | None = None
    window_id: int | None = None
    """Assigned when saved: increases over the database's life (the MLflow step of the window)."""
    session_run_id: str | None = None
    report_html: str | None = None
    report_json: str | None = None
    created_at: datetime | None = None

    def drift_level(self, share_threshold: float) -> float | None:
        """The drift statistic in units of its threshold (>= 1.0: drifted), for display and plots.

        The calibrated score over its threshold; for a version without a calibration, the drift
        share over ``share_threshold`` (``policy.drift_threshold``). None for a performance window.
        """
        if self.drift_score is not None and self.drift_threshold:
            return self.drift_score / self.drift_threshold
        if self.drift_share is not None and share_threshold > 0:
            return self.drift_share / share_threshold
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (times as ISO strings)."""
        data = asdict(self)
        for key in ("start_time", "end_time", "created_at"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        return data


class WindowResultRow(Base):
    __tablename__ = "window_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    model_name: Mapped[str] = mapped_column(String(256), nullable=False)
    model_version: Mapped[str] = mapped_column(String(64), nullable=False)
    start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    end_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    n_predictions: Mapped[int] = mapped_column(Integer, nullable=False)
    source_offsets: Mapped[dict[str, list[int]]] = mapped_column(JSON, nullable=False, default=dict)
    drift_share: Mapped[float | None] = mapped_column(Float)
    drifted_features: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    dataset_drift: Mapped[bool | None] = mapped_column(Boolean)
    prediction_drift: Mapped[float | None] = mapped_column(Float)
    drift_score: Mapped[float | None] = mapped_column(Float)
    drift_threshold: Mapped[float | None] = mapped_column(Float)
    drifted: Mapped[bool | None] = mapped_column(Boolean)
    metrics: Mapped[dict[str, float] | None] = mapped_column(JSON)
    session_run_id: Mapped[str | None] = mapped_column(String(64))
    report_html: Mapped[str | None] = mapped_column(Text)
    report_json: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_window_results_model_kind", "model_name", "kind", "id"),)


_COLUMNS = ("kind", "model_name", "model_version", "start_time", "end_time", "n_predictions", "source_offsets",
            "drift_share", "drifted_features", "dataset_drift", "prediction_drift", "drift_score",
            "drift_threshold", "drifted", "metrics", "session_run_id",
            "report_html", "report_json")


def engine_for(settings: Settings) -> Engine:
    """The project database's engine (:func:`mlops.store.base.get_engine`, which creates ``window_results``)."""
    try:
        engine = get_engine(settings)
        _add_missing_columns(engine)
    except SQLAlchemyError as err:
        raise DatabaseError(f"database {settings.database_url!r}: cannot open or create its tables: {err}") from err
    return engine


_ADDED_COLUMNS = {"drift_score": "FLOAT", "drift_threshold": "FLOAT", "drifted": "BOOLEAN"}
"""Columns added after the table's first release: a database created before them gains them here."""


def _add_missing_columns(engine: Engine) -> None:
    present = {c["name"] for c in inspect(engine).get_columns(WindowResultRow.__tablename__)}
    with engine.begin() as conn:
        for name, kind in _ADDED_COLUMNS.items():
            if name not in present:
                conn.execute(text(f"ALTER TABLE {WindowResultRow.__tablename__} ADD COLUMN {name} {kind}"))


def save(engine: Engine, result: WindowResult) -> WindowResult:
    """Insert a result; return it with its ``window_id`` and ``created_at``."""
    created = utc_now()
    values = {name: getattr(result, name) for name in _COLUMNS}
    try:
        with engine.begin() as conn:
            window_id = conn.execute(insert(WindowResultRow).values(created_at=created, **values)
                                     .returning(WindowResultRow.id)).scalar_one()
    except SQLAlchemyError as err:
        raise DatabaseError(f"database {engine.url!r}: cannot save a {result.kind} window result: {err}") from err
    return replace(result, window_id=int(window_id), created_at=created)


def set_reports(engine: Engine, window_id: int, html: str | None, json_path: str | None) -> None:
    """Record where a window's report files are."""
    try:
        with engine.begin() as conn:
            conn.execute(update(WindowResultRow).where(WindowResultRow.id == window_id)
                         .values(report_html=html, report_json=json_path))
    except SQLAlchemyError as err:
        raise DatabaseError(f"database {engine.url!r}: cannot update window {window_id}: {err}") from err


def list_results(engine: Engine, *, model_name: str | None = None, kind: str | None = None,
                 session_run_id: str | None = None, limit: int | None = None) -> list[WindowResult]:
    """Saved results, oldest first (the newest ``limit`` when given)."""
    query = select(WindowResultRow).order_by(WindowResultRow.id.desc())
    if model_name is not None:
        query = query.where(WindowResultRow.model_name == model_name)
    if kind is not None:
        query = query.where(WindowResultRow.kind == kind)
    if session_run_id is not None:
        query = query.where(WindowResultRow.session_run_id == session_run_id)
    if limit is not None:
        query = query.limit(limit)
    try:
        with engine.connect() as conn:
            rows = list(conn.execute(query).mappings())
    except SQLAlchemyError as err:
        raise DatabaseError(f"database {engine.url!r}: cannot read window_results: {err}") from err
    return [_from_row(dict(row)) for row in reversed(rows)]


def _from_row(row: dict[str, Any]) -> WindowResult:
    values = {name: row[name] for name in _COLUMNS}
    for key in ("start_time", "end_time"):
        values[key] = as_utc(values[key])
    return WindowResult(**values, window_id=row["id"], created_at=as_utc(row["created_at"]))
