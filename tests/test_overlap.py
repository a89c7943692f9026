"""``data.overlap``: collection and scoring on a worker thread while the learner trains, the
CPU envs stepping in a collector process.

The promises checked here: the counts of a run (env steps, updates, stored transitions) are
those of the sequential order; the collecting policy is the learner's as of the start of the
collection (so at most one collection behind), and the collector process acts with exactly
the weights pushed before each collection; a collection delivered in pieces (each scored while
the next is collected) holds the same steps as one delivered whole; an interrupted overlapped
run resumes to the same end; two overlapped runs with the same seed end bit for bit alike;
nothing (thread, collector or env worker process) survives the end of a run or a Ctrl-C.
"""

from __future__ import annotations

import functools
import multiprocessing
import threading
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from tensordict import TensorDict

from tests.test_exact_resume import _first, assert_identical
from tests.test_integrity import EXPECTED_UPDATES, RESUME_RUN, counters
from tests.test_rewards import BASELINES, GOALS
from tests.test_training import fit, load, tiny_vlm_args
from vlmrm.data import RLDataModule
from vlmrm.envs import EnvConfig, make_env
from vlmrm.keys import DONE, IMAGE_EMBEDDING, NEXT, OBSERVATION, RAW_REWARD
from vlmrm.overlap import BackgroundCollection, CollectorProcess, learner_threads_advice
from vlmrm.rewards import CLIPReward, ComposedReward, GroundTruthReward
from vlmrm.rewards.steps import frame_scores
from vlmrm.sac import SAC

pytestmark = pytest.mark.usefixtures("one_thread")

OVERLAP = ["--data.overlap", "true"]


def collector_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vlmrm-collect")]


class ActingPolicyCheck(L.Callback):
    """Compares the collecting policy's weights with the learner's around each training step.

    Lightning fetches the next batch before it runs a training step; with overlap, that fetch
    starts the next collection with the learner's weights of that moment. So at the start of
    every training step the acting copy equals the learner; at its end the learner is one
    step ahead (the collection in flight runs with the weights of the step before).
    """

    def __init__(self) -> None:
        self.equal_at_start: list[bool] = []
        self.equal_at_end: list[bool] = []

    @staticmethod
    def _same(trainer, pl_module) -> bool:
        collector = trainer.datamodule._collector
        assert isinstance(collector, CollectorProcess), "CartPole collects in a process"
        acting = collector.acting_policy
        acting_params = list(acting.parameters())
        learning_params = list(pl_module.actor.parameters())
        assert acting_params and len(acting_params) == len(learning_params)
        assert all(a is not b for a, b in zip(acting_params, learning_params, strict=True))
        return all(torch.equal(a, b) for a, b in zip(acting_params, learning_params, strict=True))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        data = trainer.datamodule
        if data._background is not None and data._background.in_flight:
            self.equal_at_start.append(self._same(trainer, pl_module))

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.equal_at_end.append(self._same(trainer, pl_module))


def interrupt_an_overlapped_run(tmp_path, parallel: bool) -> tuple[list[str], Path]:
    """Ctrl-C after two training steps of an overlapped run: its arguments and last.ckpt."""
    interrupt = "--trainer.callbacks+=tests.test_training.InterruptAfter"
    args = [*RESUME_RUN, *OVERLAP, "--data.parallel", str(parallel).lower()]
    with pytest.raises(SystemExit):
        fit(tmp_path, *args, interrupt, config="cartpole_gt.yaml")
    # Ctrl-C: the collection in flight was dropped; no thread, no process is left.
    assert not collector_threads()
    assert not multiprocessing.active_children()
    (run_dir,) = (tmp_path / "run").iterdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    env_steps, global_step, num_updates = counters(last)
    assert env_steps < 600 and global_step == num_updates > 0
    return args, last


def test_interrupted_overlapped_run_resumes_to_the_sequential_end_acting_one_step_behind(
    tmp_path,
):
    args, last = interrupt_an_overlapped_run(tmp_path, parallel=False)
    # Same seed, same machine: another overlapped run interrupted at the same training step
    # holds the same weights, transitions and random states, bit for bit. Only the main thread
    # draws from this process's random streams; the collector process draws from its own,
    # seeded one; every collection starts at the same point of the main thread's sequence.
    _, again = interrupt_an_overlapped_run(tmp_path / "again", parallel=False)
    first, second = load(last), load(again)
    assert_identical(first["state_dict"], second["state_dict"])
    assert int(first["state_dict"]["num_updates"]) > 0
    buffers = [state["RLDataModule"]["replay_buffer"]["_storage"] for state in (first, second)]
    assert buffers[0]["_len"] == buffers[1]["_len"] > 0
    # The filled part of the storage (the rest is allocated, never written).
    assert_identical(*(_first(buffer["_storage"], buffer["_len"]) for buffer in buffers))
    assert_identical(first["RLDataModule"]["rng"], second["RLDataModule"]["rng"])

    check = "--trainer.callbacks+=tests.test_overlap.ActingPolicyCheck"
    cli = fit(tmp_path, *args, check, "--ckpt_path", "last", config="cartpole_gt.yaml")
    # The counts of the sequential order (tests.test_integrity checks those of a sequential
    # run with the same arguments).
    assert cli.datamodule.env_steps == 600
    assert len(cli.datamodule.replay_buffer) == 600
    assert cli.trainer.global_step == int(cli.model.num_updates) == EXPECTED_UPDATES
    assert counters(last) == (600, EXPECTED_UPDATES, EXPECTED_UPDATES)
    # The worker collected while the learner trained, always starting with the newest weights.
    acting = next(c for c in cli.trainer.callbacks if isinstance(c, ActingPolicyCheck))
    assert acting.equal_at_start and all(acting.equal_at_start)
    assert not all(acting.equal_at_end), "the learner never moved ahead of the acting copy"
    assert not collector_threads(), "the worker thread outlived the run"
    assert not multiprocessing.active_children(), "the collector process outlived the run"


@pytest.mark.slow
def test_ctrl_c_with_env_workers_inside_the_collector_process_leaves_none_behind(tmp_path):
    """``data.parallel`` and ``data.overlap``: the collector process runs the env worker
    processes; Ctrl-C still checkpoints and closes them all (the resume is the same as
    above)."""
    interrupt_an_overlapped_run(tmp_path, parallel=True)


def test_background_collection_syncs_before_collecting_and_reraises_worker_errors():
    """The unit: one collection in flight; the policy is refreshed on the caller's thread
    before each collection; a worker's exception reaches the caller at take()."""
    version = {"learner": 0, "acting": 0}
    events: list[tuple[str, int, str]] = []

    def sync_policy() -> None:
        version["acting"] = version["learner"]
        events.append(("sync", version["acting"], threading.current_thread().name))

    def next_batch() -> TensorDict:
        if version["acting"] == 3:
            raise KeyboardInterrupt
        events.append(("collect", version["acting"], threading.current_thread().name))
        return TensorDict({"x": torch.full((2, 1), float(version["acting"]))}, [2])

    scored = []
    background = BackgroundCollection(
        next_batch=next_batch,
        score=lambda batch: scored.append(batch["x"][0].item()),
        fingerprint=lambda: {"prompts": ["a"]},
        sync_policy=sync_policy,
    )
    with pytest.raises(RuntimeError, match="No collection in flight"):
        background.take()
    background.start()
    with pytest.raises(RuntimeError, match="already in flight"):
        background.start()
    taken = []
    for _ in range(3):
        version["learner"] += 1  # the learner trains while the worker collects
        result = background.take()
        taken.append(result.batch["x"][0].item())
        assert result.reward_fingerprint == {"prompts": ["a"]} and result.collect_s >= 0
        background.start()
    # Each batch was collected with the weights synced when its collection started: the
    # learner had moved on by one step when it was taken.
    assert taken == [0.0, 1.0, 2.0] and scored == taken
    main = threading.current_thread().name
    assert all(name == main for kind, _, name in events if kind == "sync")
    assert all(name.startswith("vlmrm-collect") for kind, _, name in events if kind == "collect")
    with pytest.raises(KeyboardInterrupt):
        background.take()
    background.close()
    assert not collector_threads()


def test_collector_process_acts_with_the_weights_pushed_before_each_collection():
    """No prefetch: each batch is collected after the preceding sync_policy, with its weights.

    The learner's last layer is set so that one action has all the probability (logit 30
    against 0: the other's probability is 1e-13), alternating between batches; a collector
    that started the next batch when it delivered the last (TorchRL's asynchronous
    collectors do) would act with the previous weights and return the other action.
    """
    sac = SAC(4, 2, discrete=True, action_encoding="index", hidden_sizes=(8, 8))
    config = EnvConfig(env_id="CartPole", render_width=16, render_height=16)
    collector = CollectorProcess(
        functools.partial(make_env, config, num_envs=2, seed=0),
        sac.make_policy(deterministic=False),
        learner=sac.actor,
        frames_per_batch=8,
        init_random_frames=0,
        seed=0,
    )
    try:
        batches = iter(collector)
        last = [m for m in sac.actor.modules() if isinstance(m, torch.nn.Linear)][-1]
        for favoured in (0, 1, 0, 1):
            with torch.no_grad():
                last.weight.zero_()
                last.bias.zero_()
                last.bias[favoured] = 30.0
            collector.sync_policy()
            batch = next(batches)
            assert batch.batch_size == (2, 4) and batch.device == torch.device("cpu")
            assert batch["action"].eq(favoured).all(), (favoured, batch["action"])
            assert batch["next", "pixels"].shape == (2, 4, 16, 16, 3)
    finally:
        collector.shutdown()
    assert not multiprocessing.active_children()


def test_collector_process_refuses_a_learner_of_another_shape():
    sac, other = SAC(4, 2, discrete=True), SAC(4, 3, discrete=True)
    with pytest.raises(ValueError, match="do not match the acting policy"):
        CollectorProcess(
            functools.partial(make_env, EnvConfig(env_id="CartPole"), num_envs=1, seed=0),
            sac.make_policy(),
            learner=other.actor,
            frames_per_batch=4,
            init_random_frames=0,
            seed=0,
        )


def test_learner_threads_advice_only_when_cpu_threads_and_env_processes_oversubscribe_cores():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # The quickstart on 2 cores with torch's default threads: 2 threads + the collector.
    advice = learner_threads_advice(cpu, torch_threads=2, cores=2, env_processes=1)
    assert advice is not None
    assert "2 torch threads" in advice and "1 env process(es) share 2 CPU cores" in advice
    assert "OMP_NUM_THREADS=1" in advice
    # Env workers of data.parallel count too.
    assert learner_threads_advice(cpu, torch_threads=4, cores=8, env_processes=5) is not None
    # Room for everyone, one thread, or a learner on a GPU: nothing to say.
    assert learner_threads_advice(cpu, torch_threads=4, cores=8, env_processes=1) is None
    assert learner_threads_advice(cpu, torch_threads=1, cores=2, env_processes=1) is None
    assert learner_threads_advice(cuda, torch_threads=2, cores=2, env_processes=1) is None


def test_background_collection_scores_each_piece_while_the_next_is_collected():
    """``pieces``: a collection's pieces ``[N, T / pieces]`` are joined along time, in order;
    piece k is scored on the scorer thread while piece k + 1 is collected."""
    collecting_next = [threading.Event() for _ in range(3)]
    events: list[tuple[str, int, str]] = []

    def next_batch() -> TensorDict:
        index = sum(kind == "collect" for kind, _, _ in events)
        events.append(("collect", index, threading.current_thread().name))
        if index % 3 > 0:
            collecting_next[index % 3 - 1].set()
        steps = torch.arange(2 * index, 2 * index + 2, dtype=torch.float32)
        return TensorDict({"t": steps.expand(2, 2).clone()}, [2, 2])

    def score(piece: TensorDict) -> None:
        index = int(piece["t"][0, 0].item()) // 2
        if index % 3 < 2:
            # Returns only once the next piece's collection has begun: collecting and scoring
            # one after the other would wait here for good.
            assert collecting_next[index % 3].wait(timeout=30), (
                "the next piece was not collected meanwhile"
            )
        piece.set("scored", piece["t"] * 10)
        events.append(("score", index, threading.current_thread().name))

    background = BackgroundCollection(
        next_batch=next_batch,
        score=score,
        fingerprint=dict,
        sync_policy=lambda: None,
        pieces=3,
    )
    background.start()
    result = background.take()
    background.close()
    assert result.batch.batch_size == (2, 6)
    assert result.batch["t"][0].tolist() == [0, 1, 2, 3, 4, 5] == result.batch["t"][1].tolist()
    assert torch.equal(result.batch["scored"], result.batch["t"] * 10)
    assert result.collect_s >= 0 and result.reward_s > 0
    assert [i for kind, i, _ in events if kind == "score"] == [0, 1, 2]
    assert all(name.startswith("vlmrm-collect_") for kind, _, name in events if kind == "collect")
    assert all(
        name.startswith("vlmrm-collect-score") for kind, _, name in events if kind == "score"
    )
    assert not collector_threads()


@pytest.mark.parametrize("pieces", [1, 2])
def test_the_next_collection_starts_while_the_last_piece_is_scored(pieces):
    """``take(start_next=...)``: once a collection's steps are all collected, the main thread
    syncs the policy and starts the next one, whose collecting overlaps the scoring of the
    last piece (one whole collection with ``pieces=1`` and a scorer thread); the batch
    returned is still scored in full, and ``wait()`` waits for every score."""
    version = {"learner": 0, "acting": 0}
    next_began = [threading.Event() for _ in range(3)]
    collected: list[int] = []
    scored: list[int] = []

    def sync_policy() -> None:
        version["acting"] = version["learner"]

    def next_batch() -> TensorDict:
        collection = len(collected) // pieces
        if len(collected) % pieces == 0 and collection > 0:
            next_began[collection - 1].set()
        collected.append(version["acting"])
        return TensorDict({"t": torch.full((2, 3), float(collection))}, [2, 3])

    def score(piece: TensorDict) -> None:
        collection = int(piece["t"][0, 0])
        index = sum(c == collection for c in scored)
        if index == pieces - 1 and collection < 2:
            # The last piece: returns only once the next collection has begun.
            assert next_began[collection].wait(timeout=30), "the next collection waited"
        piece.set("scored", piece["t"] + 1)
        scored.append(collection)

    background = BackgroundCollection(
        next_batch=next_batch,
        score=score,
        fingerprint=dict,
        sync_policy=sync_policy,
        pieces=pieces,
        score_aside=True,
    )
    background.start()
    asked: list[int] = []
    for collection in range(3):
        version["learner"] += 1  # trains on the previous batch while this one is collected
        more = collection < 2  # the third collection is the last

        def start_next(steps: int, more: bool = more) -> bool:
            asked.append(steps)
            return more

        result = background.take(start_next=start_next)
        assert result.batch.batch_size == (2, 3 * pieces)
        assert torch.equal(result.batch["scored"], torch.full((2, 3 * pieces), collection + 1.0))
    assert asked == [6 * pieces] * 3 and not background.in_flight  # the third started none
    # Each collection acted with the weights synced when it started: one training step behind.
    assert collected == [v for v in (0, 1, 2) for _ in range(pieces)]
    background.close()
    assert not collector_threads()


def test_a_scoring_error_reaches_take_and_starts_no_next_collection():
    """A reward model that fails on the scorer thread: the error is raised by take(), and a
    collection whose scoring has already failed starts no next one."""
    collected = []

    def score(piece: TensorDict) -> None:
        raise RuntimeError("CUDA out of memory")

    background = BackgroundCollection(
        next_batch=lambda: collected.append(1) or TensorDict({"t": torch.zeros(1, 2)}, [1, 2]),
        score=score,
        fingerprint=dict,
        sync_policy=lambda: None,
        pieces=2,
    )
    background.start()
    background.wait()  # every piece collected and its scoring failed
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        background.take(start_next=lambda steps: True)
    assert not background.in_flight and collected == [1, 1]
    background.close()
    assert not collector_threads()


def test_waiting_for_an_overlapped_collection_waits_for_its_scores_too():
    """``wait()`` (before a checkpoint, an evaluation or a reward change) returns only when
    nothing is collecting or scoring, also when the collection just taken was still being
    scored as the next began."""
    release = threading.Event()
    scoring = []

    def score(piece: TensorDict) -> None:
        scoring.append(piece["t"][0, 0].item())
        assert release.wait(timeout=30)
        scoring.append(-1.0)

    background = BackgroundCollection(
        next_batch=lambda: TensorDict({"t": torch.zeros(1, 2)}, [1, 2]),
        score=score,
        fingerprint=dict,
        sync_policy=lambda: None,
        score_aside=True,
    )
    background.start()
    waiter = threading.Thread(target=background.wait)
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive(), "wait() returned while a piece was scoring"
    release.set()
    waiter.join(timeout=30)
    assert not waiter.is_alive() and scoring == [0.0, -1.0]
    background.close()
    assert not collector_threads()


def test_background_collection_with_pieces_lets_the_scoring_finish_before_an_error_surfaces():
    """A collector error in the middle of a collection reaches take(), and only after the
    piece being scored is done: nothing uses the reward model once the collection ended."""
    calls = {"collected": 0}
    scoring_done = threading.Event()

    def next_batch() -> TensorDict:
        calls["collected"] += 1
        if calls["collected"] == 2:
            raise RuntimeError("env worker died")
        return TensorDict({"t": torch.zeros(1, 2)}, [1, 2])

    def score(piece: TensorDict) -> None:
        threading.Event().wait(0.2)  # still scoring when the collection fails
        scoring_done.set()

    background = BackgroundCollection(
        next_batch=next_batch, score=score, fingerprint=dict, sync_policy=lambda: None, pieces=2
    )
    background.start()
    with pytest.raises(RuntimeError, match="env worker died"):
        background.take()
    assert scoring_done.is_set()
    background.close()
    assert not collector_threads()
    with pytest.raises(ValueError, match="pieces=0"):
        BackgroundCollection(next_batch, score, dict, lambda: None, pieces=0)


def test_a_collection_in_pieces_holds_the_steps_of_one_collected_whole():
    """The collector process acting at random, then with the policy: four pieces of 2 steps
    per env, joined along time, are the batch of 8 steps per env, bit for bit (actions,
    observations, frames, done flags, trajectory ids)."""
    sac = SAC(4, 2, discrete=True, action_encoding="index", hidden_sizes=(8, 8))
    config = EnvConfig(env_id="CartPole", render_width=16, render_height=16, episode_length=5)

    def collections(pieces: int) -> list[TensorDict]:
        collector = CollectorProcess(
            functools.partial(make_env, config, num_envs=2, seed=3),
            sac.make_policy(deterministic=False),
            learner=sac.actor,
            frames_per_batch=16 // pieces,
            init_random_frames=16,  # the first collection at random
            seed=7,
        )
        try:
            batches, joined = iter(collector), []
            for _ in range(2):
                collector.sync_policy()
                joined.append(torch.cat([next(batches) for _ in range(pieces)], dim=1))
            return joined
        finally:
            collector.shutdown()

    whole, in_pieces = collections(1), collections(4)
    for a, b in zip(whole, in_pieces, strict=True):
        assert a.batch_size == b.batch_size == (2, 8)
        assert_identical(a.to_dict(), b.to_dict())
    # Episodes of 5 steps ended inside the pieces and went on across them.
    assert whole[0][NEXT, DONE].any() and not torch.equal(whole[0]["action"], whole[1]["action"])
    assert not multiprocessing.active_children()


class ScoresItsOwnWay(CLIPReward):
    def score(self, next_tensordict, root=None):
        return super().score(next_tensordict, root)


@pytest.mark.parametrize(
    ("steps_per_env", "num_envs", "batch_size", "pieces"),
    [
        (50, 4, 50, 2),  # 4 does not divide 50 steps: 2 pieces of 25 steps (100 frames)
        (100, 8, 64, 4),  # the paper's humanoid collection: pieces of 200 frames
        (32, 2, 32, 2),  # tools/bench_fit.py's CPU humanoid: 2 pieces of 32 frames
        (50, 4, 256, 1),  # the quickstart: its VLM scores 256 frames per forward pass
        (100, 1, 64, 1),  # one env of 100 steps: a piece would not fill a forward pass
        (7, 4, 1, 1),  # 7 steps per env: no piece count divides them
    ],
)
def test_overlap_pieces_divide_the_steps_and_fill_the_vlm_batches(
    tiny_clip, steps_per_env, num_envs, batch_size, pieces
):
    name, checkpoint = tiny_clip
    reward = CLIPReward(
        name, GOALS, BASELINES, pretrained=checkpoint, device="cpu", batch_size=batch_size
    )
    data = SimpleNamespace(
        reward=reward, steps_per_env=steps_per_env, frames_per_batch=steps_per_env * num_envs
    )
    assert RLDataModule.overlap_pieces(data) == pieces


def test_overlap_pieces_only_for_rewards_that_score_each_frame_on_its_own(tiny_clip):
    name, checkpoint = tiny_clip
    args = dict(pretrained=checkpoint, device="cpu", batch_size=8)
    data = SimpleNamespace(steps_per_env=100, frames_per_batch=800)
    data.reward = CLIPReward(name, GOALS, BASELINES, **args)
    assert RLDataModule.overlap_pieces(data) == 4
    for reward in (
        GroundTruthReward(),
        ComposedReward([CLIPReward(name, GOALS, BASELINES, **args)]),
        ScoresItsOwnWay(name, GOALS, BASELINES, **args),
    ):
        data.reward = reward
        assert RLDataModule.overlap_pieces(data) == 1, type(reward).__name__


def test_an_overlapped_vlm_run_in_pieces_stores_consecutive_steps_with_their_rewards(
    tmp_path, tiny_clip
):
    """A real overlapped fit whose collections arrive in 2 pieces: the counts are the
    sequential order's, each env's stored steps follow on from each other across the pieces'
    seams, and every stored reward is its stored frame's."""
    cli = fit(
        tmp_path,
        *tiny_vlm_args(tiny_clip),
        *OVERLAP,
        "--data.frames_per_batch", "100",
        "--data.reward.init_args.batch_size", "50",
        "--data.total_frames", "300",
    )  # fmt: skip
    data = cli.datamodule
    assert data.overlap_pieces() == 2
    assert data.env_steps == len(data.replay_buffer) == 300
    assert cli.trainer.global_step == int(cli.model.num_updates) == 20  # (300 - 100) * 0.1
    stored = data.replay_buffer[:300].reshape(3, 2, 50)  # collection, env, time
    following = stored[:, :, 1:][OBSERVATION]
    previous_next = stored[:, :, :-1][NEXT, OBSERVATION]
    continues = ~stored[:, :, :-1][NEXT, DONE].squeeze(-1)
    assert continues.sum() > 250
    assert torch.equal(following[continues], previous_next[continues])
    # Every step was scored, each piece's rewards from its own frames (the embeddings are
    # kept in float16, hence the tolerance).
    raw = stored[NEXT, RAW_REWARD].squeeze(-1)
    assert raw.std() > 1e-4
    assert torch.allclose(frame_scores(data.reward, stored[NEXT, IMAGE_EMBEDDING]), raw, atol=1e-3)
    assert not collector_threads()
    assert not multiprocessing.active_children()
