"""Every DAG imports without errors, with tags, retries and docs; no I/O at import."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def dagbag():
    from airflow.models import DagBag

    return DagBag()


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "amplitude_events" in dagbag.dags


def test_every_dag_has_tags_retries_and_docs(dagbag):
    assert dagbag.dags, "no DAG was found"
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md, f"{dag_id} has no doc_md"
        assert dag.render_template_as_native_obj, f"{dag_id} renders templates as text"
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag_id}.{task.task_id} has retries={task.retries}"


def test_plugins_folder_is_not_executed_as_plugins():
    from pathlib import Path

    from airflow._shared.module_loading import find_path_from_directory

    plugins = Path(__file__).resolve().parents[2] / "plugins"
    assert list(find_path_from_directory(str(plugins), ".airflowignore", "glob")) == []
