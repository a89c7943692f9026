"""``vlmrm fit`` / ``vlmrm validate``: LightningCLI over :class:`~vlmrm.sac.SAC` and
:class:`~vlmrm.data.RLDataModule`, with one directory per run.

Every run writes into ``<trainer.default_root_dir>/<run_name>/<start time>/`` (default
``runs/<config file name>/YYYYmmdd-HHMMSS/``): the resolved ``config.yaml``, the loggers' files
(TensorBoard by default) and ``checkpoints/`` (``last.ckpt`` plus periodic ones). ``--ckpt_path
last`` continues the newest run of that name in its own directory.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from vlmrm import cli_cache
from vlmrm.callbacks import (
    CheckpointOnInterrupt,
    EnvStepCheckpoint,
    EnvStepProgressBar,
    Evaluate,
    TrainMetrics,
)
from vlmrm.checkpointing import (
    AtomicCheckpointIO,
    check_checkpoint_file,
    load_checkpoint_file,
)
from vlmrm.checks.preflight import RewardPreflight
from vlmrm.data import CloseDataOnException, HoldInterruptsDuringBatches, RLDataModule
from vlmrm.errors import ConfigError, UserInputError
from vlmrm.interrupts import install_interrupt_handlers
from vlmrm.sac import SAC

__all__ = ["VLMRMCLI", "find_checkpoint", "run_training_cli"]

# The SAC networks are sized by the environment, which the data module builds.
SPEC_LINKS = (
    "observation_dim",
    "action_dim",
    "discrete",
    "action_low",
    "action_high",
    "action_encoding",
)

# Loggers that write into a directory we choose (``save_dir``) with Lightning's name/version
# sub-folders switched off, so their files land in the run directory itself.
_DIRECTORY_LOGGERS = ("TensorBoardLogger", "CSVLogger")


# Set by rank 0 for the ranks it launches; may also be set by hand to choose the directory.
RUN_DIR_VARIABLE = "VLMRM_RUN_DIR"


def _cluster_run_id() -> str | None:
    """The cluster job's id as a folder name (identical on every rank and node, also across
    requeues), or ``None`` outside SLURM and torchrun."""
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    torchrun_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if torchrun_id not in (None, "none"):
        return f"torchrun-{torchrun_id}"
    if torchrun_id == "none" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # torchrun starts every rank itself, each on its own clock: start times would split
        # one run into several directories (one per node, or per second).
        raise ConfigError(
            "torchrun without --rdzv-id: every rank must agree on one run directory. "
            "Add --rdzv-id <name> (e.g. --rdzv-backend c10d --rdzv-id $(date +%Y%m%d-%H%M%S)), "
            f"or set {RUN_DIR_VARIABLE} to the directory on every node."
        )
    return None


def find_checkpoint(runs_root: Path, run_name: str, which: str) -> Path:
    """``<runs_root>/<run_name>/<newest run holding it>/checkpoints/<which>.ckpt``
    (``which``: ``last`` or ``best``)."""
    pattern = f"*/checkpoints/{which}.ckpt"
    candidates = sorted((runs_root / run_name).glob(pattern), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError(
            f"--ckpt_path {which}: no checkpoint found under {runs_root / run_name}/"
            f"{pattern}. Start the run without --ckpt_path, pass the checkpoint file itself, "
            "or set --run_name / --trainer.default_root_dir to the run's."
        )
    return candidates[-1]


class VLMRMArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, whose errors are one short message instead of the full usage.

    A bad option or config value prints ``vlmrm: error: <what jsonargparse says>`` and a hint
    at ``--help``, and exits with status 2. With ``VLMRM_DEBUG=1`` (``vlmrm --debug``) errors
    print as jsonargparse prints them (``JSONARGPARSE_DEBUG=1`` adds its traceback).
    """

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        from vlmrm.cli import debug_enabled

        debug = debug_enabled() or os.environ.get("JSONARGPARSE_DEBUG", "") not in ("", "0")
        if not self.exit_on_error or debug:
            super().error(message, ex)
        self._logger.error(message)
        parser = getattr(ex, "subcommand_parser", None) or self
        # "vlmrm fit", however the program was started (`python -m vlmrm.cli`, a script).
        command = " ".join(["vlmrm", *parser.prog.replace(" [options]", "").split()[1:]])
        sys.stderr.write(f"vlmrm: error: {message.strip()}\n(all options: {command} --help)\n")
        self.exit(2)


class VLMRMCLI(LightningCLI):
    """LightningCLI for SAC from VLM rewards; the env's specs flow from the data to the model."""

    def _parse_ckpt_path(self) -> None:
        """Merge the model's hyperparameters saved in ``--ckpt_path`` into the config, as
        Lightning does, but read with :func:`~vlmrm.checkpointing.load_checkpoint_file`: no
        code from the file runs, a bad file is one clear error, and the file is memory-mapped,
        so the replay buffer in it is not read here (Lightning's own version reads it all)."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).exists():  # `last`, `best`: resolved later
            return
        weights_only = self.config[subcommand].get("weights_only")  # False only if asked
        checkpoint = load_checkpoint_file(ckpt_path, map_location="cpu", weights_only=weights_only)
        hparams = dict(checkpoint.get("hyper_parameters", {}))
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except UserInputError:
            # Lightning's DDP launcher started the other ranks from this process; they would
            # wait for this one in a collective forever. (Lightning does the same on Ctrl-C.)
            launcher = self.trainer.strategy.launcher
            if isinstance(launcher, _SubprocessScriptLauncher) and self.trainer.global_rank == 0:
                launcher.kill(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
            raise

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Check the command line against the parser's options (as ``vlmrm`` does from the
        cache before importing anything: the same messages either way) and cache the option
        schema and the help text for the next ``vlmrm`` call (see :mod:`vlmrm.cli_cache`)."""
        argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
        subcommands = getattr(parser, "_subcommands_action", None)
        if not argv or subcommands is None or argv[0] not in subcommands._name_parser_map:
            return super().parse_arguments(parser, args)
        command, rest = argv[0], [str(arg) for arg in argv[1:]]
        schema = cli_cache.schema_from_parser(subcommands._name_parser_map[command])
        cli_cache.store(command, schema=schema)
        cli_cache.check_arguments(command, rest, schema)
        if not cli_cache.help_requested(rest):
            return super().parse_arguments(parser, args)
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output):
                super().parse_arguments(parser, args)
        except SystemExit as done:
            if done.code in (None, 0):
                cli_cache.store(command, help_text=output.getvalue())
            raise
        finally:
            sys.stdout.write(output.getvalue())

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for attribute in SPEC_LINKS:
            parser.link_arguments(f"data.{attribute}", f"model.{attribute}", apply_on="instantiate")
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="Runs are written to <trainer.default_root_dir>/<run_name>/<start time>/; "
            "default: the name of the first --config file.",
        )
        parser.add_lightning_class_args(EnvStepCheckpoint, "checkpoint")
        parser.add_lightning_class_args(Evaluate, "evaluation")
        # The reward check before training (vlmrm.checks.preflight): check_reward.mode etc.
        parser.add_lightning_class_args(RewardPreflight, "check_reward")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
        # Checkpoints are always written atomically; added here rather than as a trainer
        # default so that the saved config.yaml stays plain data.
        plugins = config.get("plugins") or []
        config["plugins"] = [
            AtomicCheckpointIO(),
            *(plugins if isinstance(plugins, list) else [plugins]),
        ]
        if config.get("enable_progress_bar") is not False:
            callbacks = [*callbacks, EnvStepProgressBar()]
        try:
            return super()._instantiate_trainer(config, callbacks)
        except (MisconfigurationException, ValueError, TypeError) as error:
            # Lightning checks the trainer options here (accelerator, devices, strategy,
            # precision, ...) and raises these for a bad value. The same types raised by other
            # code (ours, a plugin) are bugs and keep their traceback.
            if isinstance(error, UserInputError) or not _raised_in_lightning(error):
                raise
            raise ConfigError(
                f"{error} (check the trainer: section of the config and the --trainer.* "
                "options; vlmrm fit --help lists them)"
            ) from error

    def before_instantiate_classes(self) -> None:
        if self.subcommand is None:
            return
        config = self.config[self.subcommand]
        # Every rank of a multi-process run must write into the same directory. Lightning's
        # own launcher starts ranks > 0 from this process, which hands its choice down.
        shared = os.environ.get(RUN_DIR_VARIABLE)
        run_dir = Path(shared) if shared else self._resolve_run_dir(config)
        if shared and config.get("ckpt_path") in ("last", "best"):
            # As rank 0 resolved it; a cluster job's first start has no checkpoint yet.
            ckpt = run_dir / "checkpoints" / f"{config.ckpt_path}.ckpt"
            config.ckpt_path = str(ckpt) if ckpt.is_file() else None
        os.environ[RUN_DIR_VARIABLE] = str(run_dir)
        config.trainer.default_root_dir = str(run_dir)
        config.checkpoint.dirpath = str(run_dir / "checkpoints")
        config.trainer.logger = self._loggers_in(run_dir, config.trainer.logger, self.subcommand)
        if self.subcommand == "fit" and config.trainer.limit_val_batches is None:
            # Evaluation runs in episodes on an env-step schedule (the Evaluate callback), not
            # in Lightning's validation loop, which `vlmrm validate` alone uses.
            config.trainer.limit_val_batches = 0
        self.run_dir = run_dir
        print(f"vlmrm: run directory {run_dir}", file=sys.stderr)

    def _resolve_run_dir(self, config: Namespace) -> Path:
        runs_root = Path(config.trainer.default_root_dir or "runs")
        run_name = config.run_name
        if run_name is None:
            config_files = config.get("config") or []
            run_name = Path(str(config_files[0])).stem if config_files else "run"
        ckpt_path = config.get("ckpt_path")
        job = _cluster_run_id()
        if self.subcommand == "fit" and ckpt_path == "last" and job is not None:
            # A cluster job resumes its own run, and its first start begins one, so a job
            # script can always pass --ckpt_path last (requeues, pre-emption).
            run_dir = runs_root / run_name / job
            ckpt = run_dir / "checkpoints" / "last.ckpt"
            if ckpt.is_file():
                config.ckpt_path = str(ckpt)
            else:
                print(f"vlmrm: no checkpoint of {job} yet; starting the run", file=sys.stderr)
                config.ckpt_path = None
            return run_dir
        if ckpt_path in ("last", "best"):
            ckpt = check_checkpoint_file(find_checkpoint(runs_root, run_name, ckpt_path))
            config.ckpt_path = str(ckpt)
            return ckpt.parent.parent
        if ckpt_path not in (None, "hpc", "registry"):
            # Missing, empty, truncated or foreign files are refused here, before any
            # environment or VLM starts; the full load checks the contents.
            ckpt = check_checkpoint_file(ckpt_path)
            if ckpt.parent.name == "checkpoints":
                return ckpt.parent.parent  # continue in the run's own directory
        # The cluster job's id when there is one, else the start time.
        return runs_root / run_name / (job or time.strftime("%Y%m%d-%H%M%S"))

    @staticmethod
    def _loggers_in(run_dir: Path, logger: Any, subcommand: str) -> Any:
        """The configured loggers, writing into ``run_dir`` (TensorBoard when none is set);
        ``vlmrm validate`` logs into ``run_dir/validate``, beside its videos and plots."""
        if logger is False:
            return False
        if logger is None or logger is True:
            logger = [Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger")]
        log_dir = run_dir / "validate" if subcommand == "validate" else run_dir
        loggers = logger if isinstance(logger, list) else [logger]
        for entry in loggers:
            if not isinstance(entry, Namespace):
                continue
            init_args = entry.get("init_args") or Namespace()
            init_args.save_dir = str(log_dir)
            kind = entry.class_path.rsplit(".", 1)[-1]
            if kind in _DIRECTORY_LOGGERS:
                init_args.name = ""
                init_args.version = ""
            if entry.class_path == "lightning.pytorch.loggers.CSVLogger":
                # Lightning's deletes an existing metrics.csv; a resumed run appends to it.
                entry.class_path = "vlmrm.loggers.CSVLogger"
            named = init_args.get("id") or init_args.get("version")
            if kind == "WandbLogger" and subcommand == "fit" and not named:
                # One W&B run per run directory (WandbLogger resumes an existing id), so
                # `--ckpt_path last` continues the same curves.
                run_id = f"{run_dir.parent.name}-{run_dir.name}"
                init_args.id = re.sub(r"[^A-Za-z0-9_.-]", "-", run_id)
            entry.init_args = init_args
        return loggers


def _raised_in_lightning(error: BaseException) -> bool:
    """Whether ``error`` was raised by Lightning's own code (its innermost frame)."""
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    module = traceback.tb_frame.f_globals.get("__name__", "") if traceback else ""
    return module.startswith(("lightning.", "lightning_fabric."))


def _quiet_known_warnings() -> None:
    # Lightning's advice for manual optimisation does not apply: SAC checkpoints the state
    # after its updates on purpose. The pytree message is a Lightning/torch version mismatch.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    # Tests and tools call the CLI with an argument list while sys.argv holds their own.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def run_training_cli(args: Sequence[str] | None = None, run: bool = True) -> VLMRMCLI:
    """Build (and by default run) the training CLI on ``args`` (default: ``sys.argv[1:]``).

    Ctrl-C and SIGTERM (cluster pre-emption, ``kill``) take the checkpointing interrupt path,
    after the training step or batch store in progress has finished (:mod:`vlmrm.interrupts`).
    """
    _quiet_known_warnings()
    inherited = os.environ.get(RUN_DIR_VARIABLE)
    with install_interrupt_handlers():
        return _run(args, run, inherited)


def _run(args: Sequence[str] | None, run: bool, inherited: str | None) -> VLMRMCLI:
    try:
        cli = VLMRMCLI(
            SAC,
            RLDataModule,
            args=None if args is None else list(args),
            run=run,
            parser_class=VLMRMArgumentParser,
            parser_kwargs={"parser_mode": "omegaconf"},
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "callbacks": [
                    HoldInterruptsDuringBatches(),
                    TrainMetrics(),
                    CheckpointOnInterrupt(),
                    CloseDataOnException(),
                ],
                "max_epochs": -1,  # data.total_frames (env steps) ends the run
                "num_sanity_val_steps": 0,
                "log_every_n_steps": 1,
            },
        )
        run_dir = getattr(cli, "run_dir", None)
        if run and run_dir is not None and cli.trainer.is_global_zero:
            print(
                f"vlmrm: done; checkpoints, logs, videos and plots are in {run_dir.resolve()}",
                file=sys.stderr,
            )
        return cli
    finally:
        # The next run started from this process (tests, notebooks) gets its own directory.
        if inherited is None:
            os.environ.pop(RUN_DIR_VARIABLE, None)
