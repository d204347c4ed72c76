"""The `edge-fashion` command: a thin click layer that chains the pipeline's stages."""

import functools
import pathlib
import sys

import click

import edge_fashion
from edge_fashion import config as config_module
from edge_fashion import quiet
from edge_fashion.deploy import fleet as fleet_module
from edge_fashion.deploy import transport as transport_module

GATE_EXIT_CODE = 3  # The int8 model was refused by the accuracy gate.
DEFAULTS = config_module.BuildConfig()


class GateRefused(click.ClickException):
    exit_code = GATE_EXIT_CODE


def progress(message: str) -> None:
    click.secho(message, err=True, fg="cyan")


def with_options(*options):
    """Add `options` to a command, in this order."""
    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function
    return decorate


# The options that fill BuildConfig; left out, they keep the preset's (or the dataclass') default.
# Each command takes only those it uses.
OUT = click.option("--out", "out_dir", type=click.Path(path_type=pathlib.Path, file_okay=False),
                   help=f"Folder for every artifact [default: {DEFAULTS.out_dir}].")
DATA_DIR = click.option("--data-dir", type=click.Path(path_type=pathlib.Path),
                        help="Folder with the four Fashion-MNIST IDX .gz files [default: search $EDGE_FASHION_DATA, "
                             "~/.keras/datasets/fashion-mnist, /usr/share/datasets/fashion-mnist].")
PRESET = click.option("--preset", type=click.Choice(sorted(config_module.PRESETS)), default="default",
                      show_default=True, help="Named overrides: 'fast' trains a few epochs for a quick look; "
                                              "'fashion-mnist' trains on Fashion-MNIST alone, without the stock photos; "
                                              "'plain' as well, and without camera augmentation (Fashion-MNIST's "
                                              "images as they are).")
SEED = click.option("--seed", type=int, help=f"Same seed, same CPU model [default: {DEFAULTS.seed}].")
EPOCHS = click.option("--epochs", type=click.IntRange(1), help=f"[default: {DEFAULTS.epochs}]")
BATCH_SIZE = click.option("--batch-size", type=click.IntRange(1), help=f"[default: {DEFAULTS.batch_size}]")
LEARNING_RATE = click.option("--learning-rate", type=click.FloatRange(0, min_open=True),
                             help=f"Peak of the cosine schedule [default: {DEFAULTS.learning_rate}].")
DROPOUT = click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), help=f"[default: {DEFAULTS.dropout}]")
TRAIN_LIMIT = click.option("--train-limit", type=click.IntRange(10),
                           help="Train on a stratified subset of this many images [default: all 55,000].")
DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]),
                      help="Where to train [default: auto, a GPU when TensorFlow sees one].")
REPRESENTATIVE_SAMPLES = click.option(
    "--representative-samples", type=click.IntRange(1),
    help=f"int8 calibration images from the training split [default: {DEFAULTS.representative_samples}].")
QUANTIZER = click.option("--quantizer", type=click.Choice(["converter", "ai-edge"]),
                         help=f"int8 quantizer: TFLiteConverter or ai-edge-quantizer (needs --io-dtype int8) "
                              f"[default: {DEFAULTS.quantizer}].")
PER_CHANNEL = click.option("--per-channel/--per-tensor", default=None,
                           help="One weight scale per Dense output unit, or one per layer [default: per-channel].")
IO_DTYPE = click.option("--io-dtype", type=click.Choice(["uint8", "int8"]),
                        help=f"The int8 model's input and output type [default: {DEFAULTS.io_dtype}].")
MAX_DROP = click.option("--max-drop", type=float,
                        help=f"Refuse int8 more than this many points below float [default: {DEFAULTS.max_drop}].")
PHOTOS_FOLDER = click.Path(path_type=pathlib.Path, file_okay=False, exists=True)
PHOTOS = click.option("--photos", type=PHOTOS_FOLDER, multiple=True,
                      help="A folder of your own photos, one sub-folder per class (T-shirt-top/, Ankle boot/, ...); "
                           "repeatable. Trained on beside the stock photos; part held out and reported.")
PHOTO_SHARE = click.option("--photo-share", type=click.FloatRange(0, 1, max_open=True),
                           help=f"Share of each training batch that photos fill, the stock set's and yours "
                                f"[default: {DEFAULTS.photo_share}].")
PHOTO_HELD_OUT = click.option("--photo-held-out", type=click.FloatRange(0, 1, max_open=True),
                              help=f"Share of each class's photos held out of training to report on "
                                   f"[default: {DEFAULTS.photo_held_out}].")
VERBOSE = click.option("--verbose", "-v", is_flag=True,
                       help="Also show TensorFlow's own logs (start-up, converter, warnings), hidden otherwise.")

TRAINING = (PRESET, SEED, EPOCHS, BATCH_SIZE, LEARNING_RATE, DROPOUT, TRAIN_LIMIT, DEVICE)
CONVERTING = (REPRESENTATIVE_SAMPLES, QUANTIZER, PER_CHANNEL, IO_DTYPE, MAX_DROP)
WITH_PHOTOS = (PHOTOS, PHOTO_SHARE, PHOTO_HELD_OUT)
# convert re-quantizes a trained model: its calibration images and held-out photos are drawn from
# what that model trained on, so it takes the seed and train limit that training was given.
CONVERT_SEED = click.option("--seed", type=int, help=f"The seed the model was trained with: calibration images "
                                                     f"and held-out photos are drawn as then [default: {DEFAULTS.seed}].")
CONVERT_TRAIN_LIMIT = click.option("--train-limit", type=click.IntRange(10),
                                   help="The --train-limit the model was trained with, if any: calibration images "
                                        "are drawn from that subset.")
CONVERT_PRESET = click.option("--preset", type=click.Choice(sorted(config_module.PRESETS)), default="default",
                              show_default=True, help="The --preset the model was trained with: whether the stock "
                                                      "photos join the calibration images.")
CONVERT_PHOTOS = click.option("--photos", type=PHOTOS_FOLDER, multiple=True,
                              help="The --photos the model was trained with: the training ones join the calibration "
                                   "images, the held-out ones are reported.")
EVALUATE_PHOTOS = click.option("--photos", type=PHOTOS_FOLDER, multiple=True,
                               help="A folder of your own photos, one sub-folder per class (T-shirt-top/, Ankle "
                                    "boot/, ...); repeatable. Both models classify every photo there.")


# How to reach a board over ssh, for deploy and pull: they fill deploy's Target.
SSH_OPTIONS = (
    click.option("--port", "-p", type=click.IntRange(1, 65535), help="SSH port [default: ~/.ssh/config's, else 22]."),
    click.option("--identity", "-i", type=click.Path(path_type=pathlib.Path, dir_okay=False, exists=True),
                 help="The private key to log in with (ssh -i)."),
    click.option("--ssh-config", "-F", type=click.Path(path_type=pathlib.Path, dir_okay=False, exists=True),
                 help="An ssh_config file to read instead of ~/.ssh/config (ssh -F)."),
)


def make_config(**options) -> config_module.BuildConfig:
    options["photos"] = tuple(options.get("photos") or ()) or None  # Left out: the preset's (none).
    try:
        return config_module.make_config(**options)
    except ValueError as error:
        raise click.UsageError(str(error)) from None


def checked_config(options: dict, check) -> config_module.BuildConfig:
    """The config, once `check(config)` found its inputs good: a missing one fails in a second,
    before TensorFlow loads, whose start-up lines are hidden unless --verbose."""
    quiet.configure(options.pop("verbose"))
    config = make_config(**options)
    check(config)
    return config


def user_errors(function):
    """Turn the library's ValueErrors (bad data, bad model, refused gate) into one-line errors."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        from edge_fashion.pipeline import evaluate

        try:
            return function(*args, **kwargs)
        except evaluate.GateError as error:
            raise GateRefused(str(error)) from None
        except click.ClickException:
            raise
        except (ValueError, OSError) as error:
            raise click.ClickException(str(error)) from None
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(edge_fashion.__version__, prog_name="edge-fashion")
def cli():
    """Train, quantize to int8, verify and ship a Fashion-MNIST classifier to a small board.

    \b
    Example:
        edge-fashion build                 # train, convert, verify: artifacts/ and artifacts/device/
        edge-fashion build --preset fast   # a few epochs, for a quick look
    """


@cli.command()
@with_options(OUT, DATA_DIR, *TRAINING, *CONVERTING, *WITH_PHOTOS, VERBOSE)
@user_errors
def build(**options):
    """Train the MLP, convert it to float and int8 TFLite, verify int8 against float, write the bundle.

    Each build becomes a run of its own, OUT/runs/<UTC time>-<int8 sha256>/, published whole;
    OUT/latest then points at it, and OUT/device, OUT/report.md ... are links through latest.
    Exits with status 3, leaving latest untouched, when the int8 model loses more than --max-drop
    points of test accuracy; the refused model is kept in OUT/rejected/. A second build into the
    same OUT while one runs stops with an error naming it.
    Trains on Fashion-MNIST and on the stock photos shipped with edge-fashion (real photos of
    garments and shoes); with --photos, your own photos train too, and the held-out ones are
    reported beside the test set.

    \b
    Example:
        edge-fashion build --out artifacts
        edge-fashion build --photos my-photos/        # your photos train beside the stock set
        edge-fashion deploy pi@raspberrypi.local:fashion --install
    """
    from edge_fashion.pipeline import inputs

    config = checked_config(options, inputs.check)
    with quiet.hidden_output():  # TensorFlow loads here, once the inputs are known good.
        from edge_fashion.pipeline import stages

    click.echo(stages.summary(stages.build(config, progress), config.out_dir))


@cli.command("train")
@with_options(OUT, DATA_DIR, *TRAINING, *WITH_PHOTOS, VERBOSE)
@user_errors
def train_command(**options):
    """Train only: write OUT/trained/model.keras and train.json (history, best epoch, device).

    The next `convert` quantizes that model into a run.

    \b
    Example:
        edge-fashion train --epochs 40 --out artifacts
        edge-fashion convert --out artifacts
    """
    from edge_fashion.pipeline import inputs

    config = checked_config(options, inputs.check_train)
    with quiet.hidden_output():
        from edge_fashion.pipeline import stages

    trained = stages.train_only(config, progress)
    click.echo(f"Best validation accuracy {100 * trained.best_validation_accuracy:.2f}% at epoch "
               f"{trained.best_epoch}; wrote {config.out_dir / stages.TRAINED / 'model.keras'}")


@cli.command()
@with_options(OUT, DATA_DIR, CONVERT_PRESET, CONVERT_SEED, CONVERT_TRAIN_LIMIT, *CONVERTING, CONVERT_PHOTOS,
              PHOTO_SHARE, PHOTO_HELD_OUT, VERBOSE)
@user_errors
def convert(**options):
    """Re-quantize a model without retraining, verify it, and publish it as a new run if it passes.

    The model is the one `train` left in OUT/trained/, else the latest run's.

    \b
    Example:
        edge-fashion convert --out artifacts --representative-samples 1000
    """
    from edge_fashion.pipeline import inputs

    config = checked_config(options, inputs.check_convert)
    with quiet.hidden_output():
        from edge_fashion.pipeline import stages

    click.echo(stages.summary(stages.reconvert(config, progress), config.out_dir))


@cli.command()
@with_options(OUT, DATA_DIR, MAX_DROP, EVALUATE_PHOTOS, VERBOSE)
@user_errors
def evaluate(**options):
    """Re-verify the latest run's models (or those of the run given as --out) over the test set; exit 3 if
    int8 fails the gate.

    With --photos, also both models on every photo there (overall, per class, and a contact sheet
    of what the model saw), written into OUT/report.json, report.md and photos_evaluated.png.

    \b
    Example:
        edge-fashion evaluate --out artifacts --max-drop 0.3
        edge-fashion evaluate --out artifacts --photos my-photos/
    """
    from edge_fashion.pipeline import inputs

    config = checked_config(options, inputs.check_evaluate)
    with quiet.hidden_output():
        from edge_fashion.pipeline import evaluate as evaluate_module
        from edge_fashion.pipeline import stages

    dataset = stages.load_data(config, progress)
    keras_model, float_content, int8_content = stages.read_models(config.out_dir)
    progress("Verifying the Keras, float and int8 models on the test set")
    verdict = evaluate_module.verify(keras_model, float_content, int8_content,
                                     dataset.test_images, dataset.test_labels)
    click.echo(f"Keras {100 * verdict.keras.accuracy:.2f}%, float TFLite {100 * verdict.float_tflite.accuracy:.2f}%, "
               f"int8 TFLite {100 * verdict.int8.accuracy:.2f}%; top-1 agreement int8/float "
               f"{100 * verdict.int8_float_agreement:.2f}%")
    if config.photos:
        from edge_fashion.pipeline import photo_report

        section = stages.evaluate_photos(config, float_content, int8_content, progress)
        click.echo(photo_report.summary_line(section, "photos:") + f"; written to {config.out_dir / 'report.md'}")
    evaluate_module.check_gate(verdict.float_tflite.accuracy, verdict.int8.accuracy, config.max_drop)
    click.echo(f"int8 passes the gate: {evaluate_module.drop_phrase(verdict.drop_points)} against float "
               f"(allowed: {config.max_drop:g} lost)")


@cli.command("deploy")
@click.argument("target", required=False)
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=pathlib.Path, file_okay=False),
              default=config_module.BuildConfig().out_dir / "device", show_default=True,
              help="The bundle to copy: a build's device/ folder, a run (OUT/runs/NAME), OUT/latest or OUT.")
@with_options(*SSH_OPTIONS)
@click.option("--python", help="The target's Python [default: python3; the self-test prefers DIR/.venv].")
@click.option("--install", is_flag=True,
              help="Make DIR/.venv on the board (--system-site-packages) and pip install requirements.txt.")
@click.option("--rollback", is_flag=True, help="Switch the board back to the release deployed before the current one.")
@click.option("--list", "list_releases", is_flag=True, help="List the board's releases, the current one starred.")
@click.option("--keep", type=click.IntRange(1), default=transport_module.KEEP_RELEASES, show_default=True,
              help="Releases kept on the board (the current one always).")
@click.option("--fleet", type=click.Path(path_type=pathlib.Path, dir_okay=False, exists=True),
              help="An Ansible inventory: deploy to all its boards with ansible-playbook (TARGET is not given).")
@click.option("--batch", type=click.IntRange(1), default=fleet_module.BATCH, show_default=True,
              help="With --fleet: boards updated at once after the first (the canary).")
@click.option("--max-fail", type=click.IntRange(0, 100), default=fleet_module.MAX_FAIL_PERCENT, show_default=True,
              help="With --fleet: stop when more than this percent of a batch fails.")
@click.option("--service", is_flag=True,
              help="Install and start edge-fashion.service: classify.py --serve --camera from DIR/current, "
                   "at boot, restarted on failure; then check its /healthz.")
@click.option("--service-port", type=click.IntRange(1, 65535), default=8080, show_default=True,
              help="The port of the service's live page.")
@user_errors
def deploy_command(target, bundle_dir, install, rollback, list_releases, keep, fleet, batch, max_fail,
                   service, service_port, **options):
    """Copy the bundle to TARGET, [user@]host:dir over ssh or a local folder, verify it, test it, switch to it.

    Each bundle goes to its own folder, DIR/releases/<sha>/; only files the board does not hold yet
    travel, every file's sha256 is read back, and classify.py --self-test runs there. Only when it
    passes does DIR/current (a symlink, swapped in one rename) move to it, and edge-fashion.service,
    if installed, restart. An interrupted or failed deploy leaves current as it was.

    \b
    Examples:
        edge-fashion deploy pi@raspberrypi.local:fashion --install
        edge-fashion deploy pi@raspberrypi.local:fashion --list
        edge-fashion deploy pi@raspberrypi.local:fashion --rollback
        edge-fashion deploy /media/$USER/rootfs/home/pi/fashion
        edge-fashion deploy --fleet boards.ini --batch 10 --max-fail 20
        edge-fashion deploy pi@raspberrypi.local:fashion --install --service
    """
    from edge_fashion.pipeline import runs
    from edge_fashion.deploy import releases
    from edge_fashion.deploy import service as service_module

    refuse_unused_deploy_options(click.get_current_context())
    bundle_dir = runs.bundle_folder(bundle_dir)
    if fleet is not None:
        return deploy_fleet(bundle_dir, fleet, batch, max_fail, keep)
    if target is None:
        raise click.UsageError("give a TARGET, or --fleet INVENTORY")
    destination = transport_module.parse_target(target, **options)
    if list_releases or rollback:
        with transport_module.on_board(destination) as call:
            if rollback:
                releases.rollback(call, keep, destination.python, str(destination), click.echo)
            click.echo("\n".join(releases.describe(releases.releases(call))))
        return
    if service:
        service_module.check_target(destination)
    transport_module.deploy(bundle_dir, destination, install=install, keep=keep, progress=click.echo)
    if service:
        service_module.install(destination, service_port, click.echo)
        service_module.check_health(destination, service_port, click.echo)


def given(context: click.Context, *names: str) -> list[str]:
    """How the user wrote those of the named parameters that the command line gave."""
    sources = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    return [param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
            for param in context.command.params
            if param.name in names and context.get_parameter_source(param.name) in sources]


def refuse_unused_deploy_options(context: click.Context) -> None:
    """A usage error for options this kind of deploy would ignore (a fleet, listing, rolling back)."""
    params = context.params
    if params["fleet"] is not None:
        unused = given(context, "target", "install", "rollback", "list_releases", "service", "service_port",
                       "port", "identity", "ssh_config", "python")
        reason = "--fleet reads the boards and how to reach them from the inventory"
    elif params["list_releases"] or params["rollback"]:
        unused = given(context, "bundle_dir", "install", "service", "service_port", "batch", "max_fail")
        reason = "--list and --rollback only read or switch the board's releases"
    else:
        unused = given(context, "batch", "max_fail") + ([] if params["service"] else given(context, "service_port"))
        reason = "--batch and --max-fail go with --fleet, --service-port with --service"
    if unused:
        raise click.UsageError(f"{', '.join(unused)}: not used here ({reason})")


def deploy_fleet(bundle_dir, inventory, batch, max_fail, keep):
    result = fleet_module.deploy_fleet(bundle_dir, inventory, batch, max_fail, keep, progress=click.echo)
    click.echo("\n".join(fleet_module.summary_lines(result)))
    fleet_module.check(result)


@cli.command("runs")
@click.option("--out", "out_dir", type=click.Path(path_type=pathlib.Path, file_okay=False),
              default=config_module.BuildConfig().out_dir, show_default=True, help="The build folder.")
@click.option("--keep", type=click.IntRange(1), help="Delete all but the newest N runs; the latest is always kept.")
@user_errors
def runs_command(out_dir, keep):
    """List the builds in OUT/runs/, oldest first, the latest (what OUT/device is) marked with *.

    Shows each run's seed, float and int8 test accuracy, real-photo accuracy when the build
    measured it, the int8 model's size and sha256.

    \b
    Examples:
        edge-fashion runs
        edge-fashion runs --keep 5
        edge-fashion deploy pi@raspberrypi.local:fashion --bundle artifacts/runs/20261129T160530Z-1a2b3c4d
    """
    from edge_fashion.pipeline import runs

    if keep is not None:
        for name in runs.prune(out_dir, keep):
            click.echo(f"deleted {out_dir / runs.RUNS / name}")
    listed = runs.list_runs(out_dir)
    click.echo(runs.table(listed) if listed else f"No runs in {out_dir / runs.RUNS} yet.")


@cli.command("pull")
@click.argument("target")
@click.argument("folder", type=click.Path(path_type=pathlib.Path, file_okay=False))
@with_options(*SSH_OPTIONS)
@click.option("--python", help="The target's Python [default: python3].")
@user_errors
def pull_command(target, folder, **options):
    """Bring the frames a board kept with `classify.py --save-frames DIR` from TARGET into FOLDER.

    TARGET is [user@]host:DIR over ssh or a local folder, as for deploy. The frames keep their
    layout, FOLDER/<predicted label>/<name>; those whose bytes FOLDER already holds anywhere (say,
    moved to the right class) are skipped, and no local file is ever overwritten. Move the wrong
    ones to the right class folder, then train on FOLDER with `edge-fashion build --photos FOLDER`.

    \b
    Example:
        edge-fashion pull pi@raspberrypi.local:fashion/frames my-photos
        edge-fashion build --photos my-photos
    """
    from edge_fashion.deploy import pull, transport

    pull.pull(transport.parse_target(target, **options), folder, progress=click.echo)


@cli.command("bench")
@click.argument("build_dir", required=False, default=config_module.BuildConfig().out_dir,
                type=click.Path(path_type=pathlib.Path, file_okay=False))
@click.option("--out", "out_dir", type=click.Path(path_type=pathlib.Path, file_okay=False),
              help="Folder for bench.json, bench.md and bench.png [default: BUILD_DIR].")
@click.option("--invokes", type=click.IntRange(1),
              help="Timed single-image invokes per model and runtime [default: 1000; --quick: 200].")
@click.option("--quick", is_flag=True, help="Fewer repetitions: a smoke test with noisier figures.")
@click.option("--device-python", type=click.Path(path_type=pathlib.Path, dir_okay=False),
              help="The python of an environment with tflite-runtime [default: .cache/device-venv's, if any].")
@user_errors
def bench_command(build_dir, out_dir, invokes, quick, device_python):
    """Measure BUILD_DIR's models on this machine: size, cold start, latency, throughput, memory.

    Each model runs under each runtime found (tflite-runtime, ai-edge-litert, TensorFlow) in a
    process of its own; a runtime that is not installed is reported as such. Writes bench.json,
    bench.md and bench.png, and prints the table with the targets met or missed.

    \b
    Example:
        edge-fashion bench artifacts
        edge-fashion bench artifacts --quick --device-python .cache/device-venv/bin/python
    """
    from edge_fashion.bench import report, run

    config = run.make_config(build_dir, quick=quick, out_dir=out_dir, invokes=invokes, device_python=device_python)
    click.echo(report.markdown(run.run_bench(config, progress)))


def main():
    cli(prog_name="edge-fashion")


if __name__ == "__main__":
    sys.exit(main())
