"""Process-level tests of the language-model path: mssl_workbench.objectives.mce, lm.data, lm.config, lm.train and
evaluation.gsm8k (their chapters nbs/04g_objectives_mce, 14_lm_data, 14a_lm_config, 14b_lm_train and 15a_evaluation_gsm8k
hold the fast unit tests).

- two gloo processes launched through torchrun's environment variables equal one process (same global batch, gradient
  accumulation in the single process) for a few steps: per-step losses and final weights;
- stopping after k steps and resuming with resume="auto" is bit-identical to an uninterrupted run;
- every one of GSM8K's 1,319 test answers (and 7,473 train answers) parses to its #### number (full files from
  ../shared/data/gsm8k when present, else skipped with the reason);
- prompt tokens receive no gradient through a real model, for each construction;
- a tiny model's loss falls, and the run directory, `lm_eval_main` and a local 🤗 model directory work end to end.
"""
import contextlib
import io
import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from procs import free_port
from mssl_workbench.engine import rundir as _runs
from mssl_workbench.evaluation.gsm8k import lm_eval_main, load_lm
from mssl_workbench.config.schema import config_to_dict
from mssl_workbench.lm.config import LM_PRESETS, lm_config_from_dict
from mssl_workbench.lm.data import (CharTokenizer, HFTokenizer, Example, collate, encode_examples, extract_answer, make_arith_problems,
                                    read_examples, score_generation, tiny_lm_config)
from mssl_workbench.lm.train import fit_lm
from mssl_workbench.objectives.mce import MatrixCrossEntropyLMLoss

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"
TIMEOUT_S = 300
torch.set_num_threads(1)


def tiny_cfg(out_dir, **sections) -> dict:
    "A config that trains in seconds: a 1-block width-32 GPT-2 on 64 generated problems"
    d = {"output": str(out_dir), "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_len": 80},
         "data": {"n_train": 64, "n_test": 6},
         "train": {"max_steps": 4, "batch_size": 8, "micro_batch_size": 4, "log_every": 1, "quiet": True},
         "eval": {"max_new_tokens": 8, "monitor_batch": 6}}
    for k, v in sections.items(): d[k] = {**d.get(k, {}), **v}
    return d




def _worker(rank: int, world: int, port: int, cfg: dict):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    fit_lm(lm_config_from_dict(cfg))


def final_state(run_dir) -> dict:
    rec = _runs.read_run(run_dir)
    return _runs.load_checkpoint(rec.checkpoints[0])   # newest first


@pytest.mark.parametrize("mce", [None, "embedding", "batch"])
def test_two_gloo_processes_equal_one(tmp_path, mce):
    loss = {"mce": mce, "gamma": 0.5} if mce else {}
    one = tiny_cfg(tmp_path / "one", loss=loss, train={"max_steps": 3})
    two = tiny_cfg(tmp_path / "two", loss=loss, train={"max_steps": 3})
    fit_lm(lm_config_from_dict(one))                                   # 1 process: 2 micro-batches accumulated
    ctx = mp.start_processes(_worker, args=(2, free_port(), two), nprocs=2, join=False, start_method="spawn")
    for _ in range(TIMEOUT_S):
        if ctx.join(timeout=1): break
    else:
        for p in ctx.processes: p.kill()
        pytest.fail(f"2-process run did not finish within {TIMEOUT_S} s")
    a, b = _runs.read_run(tmp_path / "one"), _runs.read_run(tmp_path / "two")
    assert [m["step"] for m in a.metrics] == [m["step"] for m in b.metrics] == [1, 2, 3]
    for ra, rb in zip(a.metrics, b.metrics):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5, abs=1e-6)
        assert ra["terms"] == pytest.approx(rb["terms"], rel=1e-5, abs=1e-6)
        assert ra["answer_tokens"] == rb["answer_tokens"]
    sa, sb = final_state(tmp_path / "one"), final_state(tmp_path / "two")
    for k in sa["model"]:
        torch.testing.assert_close(sa["model"][k], sb["model"][k], rtol=1e-4, atol=1e-5)
    assert b.summary["world_size"] == 2 and a.summary["world_size"] == 1
    assert b.evals["gsm8k"]["n"] == a.evals["gsm8k"]["n"] == 6      # the evaluation was split over both ranks and gathered
    for k in ("test_answer_ce", "train_answer_ce"):                  # every rank computes the answer CE of the same weights
        assert b.summary[k] == pytest.approx(a.summary[k], rel=1e-4) and a.summary[k] > 0


@pytest.mark.parametrize("mce", [None, "embedding"])
def test_resume_is_bit_identical(tmp_path, mce):
    loss = {"mce": mce, "gamma": 0.3} if mce else {}
    straight = lm_config_from_dict(tiny_cfg(tmp_path / "a", loss=loss, train={"max_steps": 6}))
    fit_lm(straight)
    part = tiny_cfg(tmp_path / "b", loss=loss, train={"max_steps": 6, "stop_after_steps": 3})
    first = fit_lm(lm_config_from_dict(part))
    assert first["steps"] == 3 and first["stop_reason"] == "stop_after_steps"
    part["train"]["stop_after_steps"] = None
    fit_lm(lm_config_from_dict(part), resume="auto")
    sa, sb = final_state(tmp_path / "a"), final_state(tmp_path / "b")
    assert sa["step"] == sb["step"] == 6
    for k in sa["model"]: assert torch.equal(sa["model"][k], sb["model"][k]), k
    for k, v in sa["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"): assert torch.equal(v[name], sb["optimizer"]["state"][k][name])
    ma, mb = _runs.read_run(tmp_path / "a").metrics, _runs.read_run(tmp_path / "b").metrics
    assert [m["step"] for m in mb] == list(range(1, 7))
    assert [m["loss"] for m in ma] == [m["loss"] for m in mb]
    ga = (tmp_path / "a/eval/generations_step_00000006.jsonl").read_text()
    gb = (tmp_path / "b/eval/generations_step_00000006.jsonl").read_text()
    assert ga == gb


def first_release(d: dict) -> dict:
    "A config dictionary as the first release wrote it: train.out_dir, optim.lr, loss.lamda and loss.mu (LM_RENAMED, spelled out)"
    d = json.loads(json.dumps(d))
    d.setdefault("train", {})["out_dir"] = d.pop("output")
    d["optim"]["lr"] = d["optim"].pop("base_lr")
    d["loss"]["lamda"], d["loss"]["mu"] = d["loss"].pop("ridge_p"), d["loss"].pop("ridge_q")
    return d


def test_a_first_release_run_evaluates_and_resumes_bit_identically(tmp_path, capsys):
    "A run stopped under the old key names (its checkpoint's config and config.yaml) evaluates, and resumes to the straight run's weights"
    loss = {"mce": "batch", "gamma": 0.3, "ridge_p": 0.5, "ridge_q": 2.0}
    straight = tiny_cfg(tmp_path / "a", loss=loss, optim={"base_lr": 2e-3}, train={"max_steps": 5})
    fit_lm(lm_config_from_dict(straight))
    part = tiny_cfg(tmp_path / "b", loss=loss, optim={"base_lr": 2e-3}, train={"max_steps": 5, "stop_after_steps": 2})
    fit_lm(lm_config_from_dict(part))
    run = tmp_path / "b"
    manifest = [json.loads(l) for l in (run / "checkpoints" / "manifest.jsonl").read_text().splitlines()]
    for entry in manifest:                     # rewrite each checkpoint's config (and its size in the manifest) as the first release did
        path = run / "checkpoints" / entry["file"]
        if not path.is_file(): continue
        state = _runs.load_checkpoint(path)
        state["config"] = first_release(state["config"])
        entry["bytes"] = _runs.save_checkpoint(path, state)
    (run / "checkpoints" / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in manifest))
    head = _runs.read_config(run)
    (run / "config.yaml").write_text(yaml.safe_dump(first_release(head), sort_keys=False))
    assert _runs.load_checkpoint(_runs.read_run(run).checkpoints[0])["config"]["loss"]["mu"] == 2.0
    capsys.readouterr()
    _, _, cfg, _ = load_lm(run)                 # mssl-eval gsm8k reads it under the new names
    assert (cfg.output, cfg.optim.base_lr, cfg.loss.ridge_p, cfg.loss.ridge_q) == (str(run), 2e-3, 0.5, 2.0)
    assert capsys.readouterr().err.count("config: ") == 4   # one notice per renamed key
    resumed = first_release(part)               # the same old-spelling config resumes it (the checkpoint compared under the new names)
    resumed["train"]["stop_after_steps"] = None
    fit_lm(lm_config_from_dict(resumed), resume="auto")
    sa, sb = final_state(tmp_path / "a"), final_state(run)
    assert sa["step"] == sb["step"] == 5
    for k in sa["model"]: assert torch.equal(sa["model"][k], sb["model"][k]), k
    assert [m["loss"] for m in _runs.read_run(tmp_path / "a").metrics] == [m["loss"] for m in _runs.read_run(run).metrics]
    assert "output" in _runs.read_config(run) and "out_dir" not in _runs.read_config(run)["train"]   # rewritten under the new names


@pytest.mark.parametrize("split,count", [("test", 1319), ("train", 7473)])
def test_every_gsm8k_reference_answer_parses(split, count):
    path = GSM8K / f"{split}.jsonl"
    if not path.is_file(): pytest.skip(f"full GSM8K {split} file absent at {path} (the shipped sample is tested in the chapter)")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    examples = read_examples(path)
    assert len(rows) == len(examples) == count
    mismatched = [i for i, (r, e) in enumerate(zip(rows, examples))
                  if e.target != r["answer"].split("####")[-1].strip().replace(",", "")]
    assert mismatched == []
    assert all(extract_answer(r["answer"]) == e.target for r, e in zip(rows, examples))
    # MetaMath's eval_gsm8k.py takes the reference as int(text after '#### ' with commas removed): the same numbers
    assert all(float(e.target) == int(r["answer"].split("#### ")[1].replace(",", "")) for r, e in zip(rows, examples))
    # and under the metamath protocol a generation ending in "The answer is: <reference>" scores correct, also when it
    # runs on into a new prompt with another answer
    for r, e in zip(rows[:200], examples[:200]):
        gen = f"{len(r['question'])} steps later.\nThe answer is: {e.target}\n\n### Instruction:\nAnd 2 + 2?\n\nThe answer is: 4"
        assert score_generation(gen, e.target, "metamath") == (str(round(float(e.target))), True)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("construction", [None, "embedding", "batch"])
def test_prompt_tokens_get_no_gradient_through_a_model(arch, construction):
    from transformers import AutoModelForCausalLM
    tok = CharTokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_lm_config(arch, vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, max_len=96))
    probs = make_arith_problems(3, seed=5)
    enc, _ = encode_examples(tok, [Example(p["question"], p["answer"], None) for p in probs], template="qa", max_len=96)
    batch = collate(enc, tok.pad_id)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits.retain_grad()
    loss_fn = MatrixCrossEntropyLMLoss(construction, gamma=1.0)
    loss_fn(logits, batch["labels"], weight=model.get_output_embeddings().weight).loss.backward()
    predicts_answer = torch.zeros_like(batch["labels"], dtype=torch.bool)
    predicts_answer[:, :-1] = batch["labels"][:, 1:] != -100
    assert (logits.grad[~predicts_answer] == 0).all()
    assert (logits.grad[predicts_answer].abs().sum(-1) > 0).all()
    # and the loss does not change when the prompt positions' logits do
    with torch.no_grad():
        moved = logits.detach().clone()
        moved[~predicts_answer] += torch.randn_like(moved[~predicts_answer])
        w = model.get_output_embeddings().weight
        assert loss_fn(moved, batch["labels"], weight=w).loss == pytest.approx(float(loss_fn(logits.detach(), batch["labels"], weight=w).loss), abs=1e-6)


def test_tiny_model_loss_falls_and_run_directory(tmp_path):
    cfg = tiny_cfg(tmp_path / "run", model={"d_model": 48, "n_layers": 2, "n_heads": 4, "max_len": 112},
                   data={"n_train": 512, "n_test": 8}, optim={"base_lr": 3e-3}, loss={"mce": "batch", "gamma": 0.2, "log": "taylor"},
                   train={"max_steps": 60, "batch_size": 16, "micro_batch_size": 16, "log_every": 5})
    summary = fit_lm(lm_config_from_dict(cfg))
    rec = _runs.read_run(tmp_path / "run")
    losses = [m["terms"]["ce"] for m in rec.metrics]
    assert losses[-1] < 0.6 * losses[0], losses                 # answer-token CE falls well below its start (~4.6 = log 100)
    assert (rec.config["format"], rec.config["method"], rec.config["kind"]) == (2, "lm_mce", "lm")
    assert rec.config["loss"]["log"] == "taylor" and rec.summary["steps"] == 60 and summary["accuracy_step"] == 60
    assert [c.name for c in rec.checkpoints] == ["step_00000060.pt"]
    assert {"erank", "rankme", "diff_erank"} <= set(rec.epochs[-1]["monitor"]["hidden"])
    # evaluate the run directory through the CLI entry point, on a JSON-lines file of generated problems
    data = tmp_path / "arith.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_arith_problems(5, seed=9)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out): assert lm_eval_main([str(tmp_path / "run"), str(data), "--max-new-tokens", "8"]) == 0
    result = json.loads(out.getvalue())
    assert result["n"] == 5 and result["template"] == "qa"
    saved = [json.loads(l) for l in (tmp_path / "run/eval/generations_arith.jsonl").read_text().splitlines()]
    # the accuracy is the saved records' own verdicts, and each verdict re-scores from its generation
    assert len(saved) == 5 and result["accuracy"] == sum(r["correct"] for r in saved) / 5, (result, saved)
    assert all(score_generation(r["generation"], r["reference"], result["protocol"])[1] == r["correct"] for r in saved)
    model, tok, loaded_cfg, ckpt = load_lm(rec.checkpoints[-1])
    assert loaded_cfg.loss.mce == "batch" and isinstance(tok, CharTokenizer) and not model.training


def test_bf16_autocast_llama_and_gradient_checkpointing(tmp_path):
    cfg = tiny_cfg(tmp_path / "run", model={"arch": "llama", "gradient_checkpointing": True},
                   loss={"mce": "embedding", "gamma": 0.5}, train={"max_steps": 2, "precision": "bf16"})
    summary = fit_lm(lm_config_from_dict(cfg))
    assert summary["steps"] == 2 and all(isinstance(v, float) for v in summary["final_terms"].values())


def test_local_model_directory_end_to_end(tmp_path):
    "A 🤗 model directory (weights + a tokenizer trained locally with `tokenizers`) loads with local_files_only and evaluates"
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    problems = make_arith_problems(50, seed=3)
    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")   # one token per character
    raw.train_from_iterator([p["question"] + p["answer"] for p in problems] + ["Q: A: #"],
                            trainers.WordLevelTrainer(special_tokens=["<pad>", "<bos>", "<eos>", "<unk>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")
    model_dir = tmp_path / "model"
    model = AutoModelForCausalLM.from_config(tiny_lm_config("llama", vocab_size=len(tok), d_model=32, n_layers=1, n_heads=2, max_len=160))
    model.save_pretrained(model_dir); tok.save_pretrained(model_dir)
    data = tmp_path / "gsm.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in problems[:4]))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert lm_eval_main([str(model_dir), str(data), "--max-new-tokens", "6", "--template", "qa", "--protocol", "gsm8k",
                             "--out", str(tmp_path / "g.jsonl")]) == 0
    assert json.loads(out.getvalue())["n"] == 4 and json.loads(out.getvalue())["protocol"] == "gsm8k" and len((tmp_path / "g.jsonl").read_text().splitlines()) == 4
    # fine-tune it for two steps from the directory (model.path), then break the directory
    cfg = tiny_cfg(tmp_path / "run", model={"path": str(model_dir), "max_len": 160}, data={"train": str(data), "test": str(data)},
                   train={"max_steps": 2, "batch_size": 4, "micro_batch_size": 2})
    assert fit_lm(lm_config_from_dict(cfg))["steps"] == 2
    _, loaded_tok, _, _ = load_lm(tmp_path / "run")
    assert isinstance(loaded_tok, HFTokenizer)
    (model_dir / "model.safetensors").unlink()
    err = io.StringIO()
    with contextlib.redirect_stderr(err): assert lm_eval_main([str(model_dir), str(data)]) == 2
    assert err.getvalue().count("\n") == 1 and "no weights" in err.getvalue()


def test_mssl_eval_gsm8k_dry_run(tmp_path, console):
    "mssl-eval gsm8k --dry-run prints the resolved protocol as YAML and exits 0: MetaMath's for a MetaMath run or a model directory"
    import subprocess
    import yaml
    run = tmp_path / "run"; run.mkdir()
    cfg = lm_config_from_dict({**LM_PRESETS["gsm8k-mce"][0], "model": {"path": str(tmp_path / "llemma_7b")}})
    (run / "config.yaml").write_text(yaml.safe_dump({"format": 2, "kind": "lm", "method": cfg.method, **config_to_dict(cfg)}))
    for args, protocol in [([str(run)], "metamath"), ([], "metamath"), (["--protocol", "gsm8k"], "gsm8k")]:
        r = subprocess.run([console("mssl-eval"), "gsm8k", *args, "--dry-run"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        proto = yaml.safe_load(r.stdout)
        assert proto["protocol"] == protocol and proto["max_new_tokens"] == 512
        if protocol == "metamath":
            assert proto["prompt"].endswith("### Response: Let's think step by step.") and "Instruction" in proto["stop"]
