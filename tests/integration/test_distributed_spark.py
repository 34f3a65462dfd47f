"""Training on a real Spark standalone cluster: a master and two workers started from pyspark's own
``bin/spark-class``, one core each. ``mlops train`` with ``spark.master`` pointing at the master
registers a version, and its MLflow run names the executors that ran its tasks, which the
workers' own status pages confirm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlops.mlflow import tracking_client
from mlops.services.process import ManagedProcess, stop_together, tail, wait_for
from mlops.testing import free_port, unique
from tests.conftest import REPO
from tests.integration.test_train import SEARCH_SPACE, fill_lake

pytestmark = [pytest.mark.integration, pytest.mark.distributed]

WORKERS = 2
APP_NAME = "mlops-train-distributed-test"


@dataclass(frozen=True)
class SparkCluster:
    master_url: str
    master_ui: str
    worker_uis: list[str]

    def state(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.master_ui}/json/", timeout=5).json())


def _json(url: str) -> dict[str, Any] | None:
    try:
        return dict(httpx.get(f"{url}/json/", timeout=2).json())
    except (httpx.HTTPError, ValueError):
        return None


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkCluster]:
    import pyspark

    home = Path(pyspark.__file__).parent
    root = tmp_path_factory.mktemp("spark-cluster")
    env = {"SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_DAEMON_MEMORY": "384m",
           "SPARK_LOG_DIR": str(root / "logs"), "SPARK_CONF_DIR": str(root / "conf")}
    spark_class = str(home / "bin" / "spark-class")
    port, ui = free_port(), free_port()
    cluster = SparkCluster(f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}", [])
    processes = [ManagedProcess("spark-master", root / "master.pid")]
    logs = [root / "master.log"]
    processes[0].start([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                        "--port", str(port), "--webui-port", str(ui)], logs[0], env=env)
    try:
        wait_for(lambda: _json(cluster.master_ui), 90, "spark master")
        for index in range(WORKERS):
            worker_ui = free_port()
            cluster.worker_uis.append(f"http://127.0.0.1:{worker_ui}")
            processes.append(ManagedProcess(f"spark-worker-{index}", root / f"worker-{index}.pid"))
            logs.append(root / f"worker-{index}.log")
            # One core and 768 MB each: the machine has two cores in all.
            processes[-1].start([spark_class, "org.apache.spark.deploy.worker.Worker", cluster.master_url,
                                 "--host", "127.0.0.1", "--cores", "1", "--memory", "768m",
                                 "--webui-port", str(worker_ui), "--work-dir", str(root / f"work-{index}")],
                                logs[-1], env=env)
        wait_for(lambda: sum(w["state"] == "ALIVE" for w in cluster.state()["workers"]) == WORKERS, 120,
                 f"{WORKERS} spark workers registered with the master")
        yield cluster
    except Exception:
        for log in logs:
            print(f"--- {log} ---\n{tail(log, 40)}")
        raise
    finally:
        stop_together(processes)


def test_mlops_train_on_a_standalone_cluster_registers_a_version_and_records_its_executors(
        services: Any, spark_cluster: SparkCluster, tmp_path: Path) -> None:

    from mlops.config import load_settings

    data_dir = tmp_path / "data"
    model, experiment = unique("iot-failure-cluster"), unique("train-cluster")
    settings = load_settings("local", overrides={"paths": {"data_dir": str(data_dir)}})
    fill_lake(settings)
    conf = {
        "spark.executor.memory": "512m", "spark.executor.cores": "1",
        # Executors connect back to the driver: on this machine, over loopback.
        "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
        # Schedule nothing before both executors have registered, so that both take tasks.
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
    }
    env = {
        **os.environ, "MLOPS_CONFIG_DIR": str(REPO / "configs"),
        "MLOPS_PATHS__DATA_DIR": str(data_dir),
        "MLOPS_MLFLOW__TRACKING_URI": services.mlflow.tracking_uri,
        "MLOPS_MLFLOW__REGISTERED_MODEL": model, "MLOPS_MLFLOW__EXPERIMENT": experiment,
        "MLOPS_SPARK__MASTER": spark_cluster.master_url, "MLOPS_SPARK__APP_NAME": APP_NAME,
        "MLOPS_SPARK__DRIVER_MEMORY": "1g", "MLOPS_SPARK__SHUFFLE_PARTITIONS": "4",
        "MLOPS_SPARK__CONF": json.dumps(conf),
        "MLOPS_TRAIN__CANDIDATES": "4", "MLOPS_TRAIN__SEED": "11", "MLOPS_TRAIN__MIN_ROWS": "500",
        "MLOPS_TRAIN__REFERENCE_ROWS": "300", "MLOPS_TRAIN__SEARCH_SPACE": json.dumps(SEARCH_SPACE),
    }
    result = subprocess.run([sys.executable, "-m", "mlops", "train", "--since", "2000-01-01T00:00:00+00:00",
                             "--json"], env=env, capture_output=True, text=True, timeout=300, cwd=REPO,
                            check=False)
    assert result.returncode == 0, result.stderr[-5000:]
    trained = json.loads(result.stdout)  # stdout is the one JSON document (MLflow's run links go to stderr)

    client = tracking_client(services)
    version = client.get_model_version(model, trained["version"])
    assert version.run_id == trained["run_id"]
    run = client.get_run(trained["run_id"])
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["spark.master"] == spark_cluster.master_url
    executors = json.loads(tags["spark.executor_tasks"])
    used = {e: info for e, info in executors.items() if e != "driver" and info["tasks"] > 0}
    assert tags["spark.executors"] == str(WORKERS) and len(used) == WORKERS, executors

    # The cluster's own account: the application ran one executor on each worker, and finished.
    state = spark_cluster.state()
    apps = [a for a in state["completedapps"] if a["name"] == APP_NAME]
    assert len(apps) == 1 and apps[0]["state"] == "FINISHED", state["completedapps"]
    for worker_ui in spark_cluster.worker_uis:
        worker = _json(worker_ui)
        assert worker is not None
        ran = [e for e in worker["finishedexecutors"] + worker["executors"] if e["appid"] == apps[0]["id"]]
        assert len(ran) == 1, worker
    print(f"spark cluster: master={spark_cluster.master_url} run={trained['run_id']} version={trained['version']} "
          f"executors={tags['spark.executor_tasks']} train_s={trained['duration_s']:.1f}")
