"""Uploading an existing PEFT adapter: made here with PEFT on the tiny model, uploaded as two files or a zip,
checked by a background run, then evaluated, merged and offered in the playground like a trained one. Pickle
files are refused with 415 (loose or inside a zip); a safetensors file with a lying header is refused before
anything loads it; an adapter for another base fails its check with PEFT's reason and is never listed."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.adapters.test_registry import assert_merged_matches
from tests.conftest import csrf_of, login
from worker import lifecycle


@pytest.fixture(scope="module")
def peft_adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the tiny model whose B matrices are not zero, so it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    directory = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory


def _files(directory: Path, weights: bytes | None = None) -> list[tuple[str, tuple[str, bytes]]]:
    return [
        ("files", ("adapter_config.json", (directory / "adapter_config.json").read_bytes())),
        ("files", ("adapter_model.safetensors", weights or (directory / "adapter_model.safetensors").read_bytes())),
    ]


def _safetensors(header: dict[str, Any], data: bytes, *, length: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


# model-bound; the adapter registry's SQL runs on both in test_registry.py
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_upload_check_evaluate_merge_and_serve(
    client: Any, setup: dict[str, Any], peft_adapter: Path, tmp_path: Path
) -> None:
    made = client.post(
        "/api/v1/adapters", data={"model_id": setup["model"], "name": "from elsewhere"}, files=_files(peft_adapter)
    )
    assert made.status_code == 202, made.text
    upload = made.json()
    assert upload["run"]["kind"] == "adapter_import" and upload["name"] == "from elsewhere"
    assert client.get("/api/v1/adapters").json() == []  # not listed before its check has passed
    assert "from elsewhere" in client.get("/adapters").text  # shown as being checked
    lifecycle.execute(upload["run"]["id"])

    [adapter] = client.get("/api/v1/adapters").json()
    assert adapter["job_id"] == upload["job_id"] and adapter["origin"] == "upload"
    assert adapter["dataset_version_id"] is None and adapter["adapter"] == "lora"
    assert adapter["spec"]["lora_r"] == 4 and adapter["spec"]["lora_target_modules"] in (
        "q_proj,v_proj",
        "v_proj,q_proj",
    )
    job = client.get(f"/api/v1/jobs/{upload['job_id']}").json()
    assert job["status"] == "succeeded" and job["origin"] == "upload" and job["adapter_available"]
    page = client.get(f"/adapters/{upload['job_id']}").text
    assert "not trained here" in page
    assert "uploaded-notice" in client.get(f"/jobs/{upload['job_id']}").text
    assert f"job-{upload['job_id']}" in client.get("/playground").text  # offered for chat
    lineage = client.get(f"/api/v1/adapters/{upload['job_id']}/lineage")
    assert lineage.status_code == 200

    # evaluate: it has no training data of its own, so a version must be named
    refused = client.post(f"/api/v1/jobs/{upload['job_id']}/evaluations", json={"sample_size": 2})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "dataset_version_id"
    evaluation = client.post(
        f"/api/v1/jobs/{upload['job_id']}/evaluations",
        json={"dataset_version_id": setup["version"], "split": "validation", "sample_size": 2, "max_new_tokens": 4},
    )
    assert evaluation.status_code == 201, evaluation.text
    lifecycle.execute(evaluation.json()["run"]["id"])
    report = client.get(f"/api/v1/evaluations/{evaluation.json()['id']}").json()
    assert report["summary"]["scores"]["tuned"] is not None, report

    # merge: the merged weights equal the base with the uploaded adapter
    merge = client.post(f"/api/v1/adapters/{upload['job_id']}/merge")
    assert merge.status_code == 202
    lifecycle.execute(merge.json()["id"])
    assert_merged_matches(client, {"id": upload["job_id"]}, tmp_path)

    # a zip of the adapter's folder works too; other files in it are ignored
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.write(peft_adapter / "adapter_config.json", "my-adapter/adapter_config.json")
        z.write(peft_adapter / "adapter_model.safetensors", "my-adapter/adapter_model.safetensors")
        z.writestr("my-adapter/README.md", "notes")
    zipped = client.post(
        "/api/v1/adapters", data={"model_id": setup["model"]}, files=[("files", ("a.zip", archive.getvalue()))]
    )
    assert zipped.status_code == 202, zipped.text
    # the page's form: redirected to the list, where the check shows with its progress
    form = {"model_id": setup["model"], "name": "from the page", "csrf_token": client.headers["X-CSRF-Token"]}
    posted = client.post("/adapters/upload", data=form, files=_files(peft_adapter), follow_redirects=False)
    assert posted.status_code == 303 and posted.headers["location"] == "/adapters#uploads"
    listing = client.get("/adapters").text
    assert "from the page" in listing and 'hx-get="/adapters/_uploads"' in listing

    # another user sees none of it and cannot upload onto this user's model
    client.post("/api/v1/users", json={"email": "eve@example.com", "password": "eve-password-1"})
    client.post("/logout", data={"csrf_token": client.headers.pop("X-CSRF-Token")})
    login(client, "eve@example.com", "eve-password-1")
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    assert client.get("/api/v1/adapters").json() == []
    assert client.get(f"/api/v1/adapters/{upload['job_id']}").status_code == 404
    assert client.get(f"/api/v1/jobs/{upload['job_id']}").status_code == 404
    assert "from elsewhere" not in client.get("/adapters").text
    stolen = client.post("/api/v1/adapters", data={"model_id": setup["model"]}, files=_files(peft_adapter))
    assert stolen.status_code == 404


def test_pickle_and_lying_headers_are_refused(client: Any, setup: dict[str, Any], peft_adapter: Path) -> None:
    from app.core.config import get_settings

    def upload(files: list[tuple[str, tuple[str, bytes]]]) -> Any:
        return client.post("/api/v1/adapters", data={"model_id": setup["model"]}, files=files)

    config = ("files", ("adapter_config.json", (peft_adapter / "adapter_config.json").read_bytes()))
    pickled = upload([config, ("files", ("adapter_model.bin", b"\x80\x04pickle"))])
    assert pickled.status_code == 415 and pickled.json()["error"]["code"] == "unsupported_media_type"
    assert (
        "adapter_model.bin" in pickled.json()["error"]["message"]
        and "safetensors" in pickled.json()["error"]["message"]
    )
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("x/adapter_config.json", (peft_adapter / "adapter_config.json").read_bytes())
        z.writestr("x/adapter_model.safetensors", (peft_adapter / "adapter_model.safetensors").read_bytes())
        z.writestr("x/optimizer.pt", b"\x80\x04")
    assert upload([("files", ("a.zip", archive.getvalue()))]).status_code == 415

    lora = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": {"dtype": "F32", "shape": [4, 64]}}
    cases = {
        "does not fit": _safetensors({}, b"", length=1 << 40),
        "not JSON": struct.pack("<Q", 4) + b"\xff\xfe{}",
        "outside": _safetensors({k: {**v, "data_offsets": [0, 1024]} for k, v in lora.items()}, b"\0" * 16),
        "match its shape": _safetensors({k: {**v, "data_offsets": [0, 16]} for k, v in lora.items()}, b"\0" * 16),
        "not a LoRA": _safetensors(
            {"model.embed_tokens.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8
        ),
        "after the last": _safetensors(
            {k: {**v, "shape": [1, 2], "data_offsets": [0, 8]} for k, v in lora.items()}, b"\0" * 12
        ),
        "unknown dtype": _safetensors(
            {k: {**v, "dtype": "PICKLE", "data_offsets": [0, 8]} for k, v in lora.items()}, b"\0" * 8
        ),
        "no tensors": _safetensors({"__metadata__": {"format": "pt"}}, b""),
    }
    for words, weights in cases.items():
        refused = upload(_files(peft_adapter, weights))
        assert refused.status_code == 422, (words, refused.text)
        assert (
            words in refused.json()["error"]["message"]
            and "adapter_model.safetensors" in refused.json()["error"]["message"]
        ), words
    missing = upload([config])
    assert missing.status_code == 422 and "adapter_model.safetensors" in missing.json()["error"]["message"]
    not_peft = upload([("files", ("adapter_config.json", b'{"peft_type": "PROMPT_TUNING"}')), _files(peft_adapter)[1]])
    assert not_peft.status_code == 422 and "peft_type" in not_peft.json()["error"]["message"]

    # nothing was kept of any refused upload
    assert client.get("/api/v1/jobs").json() == []
    assert not list((get_settings().artifacts_dir / "uploads").glob("adapter-*"))

    # the page shows the reason and keeps the form
    page = client.post(
        "/adapters/upload",
        data={"model_id": setup["model"], "csrf_token": client.headers["X-CSRF-Token"]},
        files=[config, ("files", ("weights.pt", b"\x80\x04"))],
    )
    assert page.status_code == 415 and "weights.pt" in page.text and 'id="adapter-upload"' in page.text


# model-bound; the adapter registry's SQL runs on both in test_registry.py
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_adapter_for_another_base_fails_its_check(
    client: Any, setup: dict[str, Any], peft_adapter: Path, tmp_path: Path
) -> None:
    """Sound safetensors whose shapes do not fit the base: the run fails with PEFT's reason; never listed."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(peft_adapter / "adapter_model.safetensors"))
    wrong = {name: t.new_zeros((t.shape[0], t.shape[1] + 3)) for name, t in tensors.items()}
    target = tmp_path / "wrong.safetensors"
    save_file(wrong, str(target))
    made = client.post(
        "/api/v1/adapters",
        data={"model_id": setup["model"], "name": "wrong shapes"},
        files=_files(peft_adapter, target.read_bytes()),
    )
    assert made.status_code == 202, made.text
    lifecycle.execute(made.json()["run"]["id"])
    job = client.get(f"/api/v1/jobs/{made.json()['job_id']}").json()
    assert job["status"] == "failed" and "does not load onto this base model" in job["run"]["error_message"]
    assert "size mismatch" in job["run"]["error_message"]
    assert client.get("/api/v1/adapters").json() == []
    page = client.get("/adapters").text
    assert "wrong shapes" in page and "does not load onto this base model" in page
