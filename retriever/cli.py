"""`retriever`: the command line of the project."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console

from retriever.local import (
    DASHBOARD_PORT,
    METRICS_PORT,
    apply_local_env,
    driver_handle,
    free_port,
    load_serve_config,
    port_in_use,
    start_local_serve,
)

apply_local_env()  # before anything imports ray

cli = typer.Typer(
    help="Retriever: ML models behind a Gradio UI and an HTTP API, served by Ray Serve.", no_args_is_help=True
)
console = Console(soft_wrap=True)  # long lines stay whole in logs and pipes


@contextlib.contextmanager
def libraries_quiet() -> Iterator[None]:
    """Keeps back what libraries print on stderr meanwhile (MLflow says each step: "Creating initial MLflow
    database tables...", "Created version '3'..."): the command says what came of it in a line of its
    own. Shown only if it fails, to say why."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            yield
    except BaseException:
        sys.stderr.write(said.getvalue())
        raise


def quiet_ray_data() -> None:
    """Our bar counts the photos: Ray Data's bars off, without its notice that they are (after ray.data's
    import, which sets its loggers' levels)."""
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    for name in ("ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)


UI_BUILDER = "retriever.graph:build_ui"


@cli.callback()
def _root() -> None:
    """Commands of the Retriever project."""


@cli.command()
def up(
    config: Path = typer.Option(Path("serve_config.yaml"), exists=True, dir_okay=False, help="Serve config to deploy."),
    port: int | None = typer.Option(None, help="HTTP port (default: the config's http_options.port)."),
    share: bool | None = typer.Option(
        None,
        "--share/--no-share",
        help="Open a public link to the UI through Gradio's tunnel (default: the config's share.enabled).",
    ),
    share_server: str | None = typer.Option(
        None, metavar="HOST:PORT", help="A self-hosted share server instead of Gradio's."
    ),
    share_tls_certificate: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="CA certificate (PEM) to trust for the self-hosted share server's TLS."
    ),
    share_basic_auth: str | None = typer.Option(
        None, metavar="USER:PASSWORD", envvar="RETRIEVER_SHARE_BASIC_AUTH", help="Login the share server asks for."
    ),
    login: str | None = typer.Option(
        None,
        metavar="USER:PASSWORD",
        envvar="RETRIEVER_LOGIN",
        help="Login the UI asks for (locally and through the link).",
    ),
    metrics_port: int = typer.Option(
        METRICS_PORT,
        envvar="RETRIEVER_METRICS_PORT",
        help="Prometheus metrics on 127.0.0.1:PORT/metrics (0: any free port).",
    ),
    dashboard: bool = typer.Option(
        False,
        "--dashboard/--no-dashboard",
        envvar="RETRIEVER_DASHBOARD",
        help="Also start Ray's dashboard (replicas, logs and Serve's metrics in a browser; ~300 MB more).",
    ),
    dashboard_port: int = typer.Option(
        DASHBOARD_PORT,
        envvar="RETRIEVER_DASHBOARD_PORT",
        help="Ray's dashboard on 127.0.0.1:PORT, with --dashboard (0: any free port).",
    ),
    open_api: bool = typer.Option(
        False, "--open-api", help="Serve the API without API keys even when it listens beyond loopback."
    ),
) -> None:
    """Start a private Ray cluster on this machine, deploy the UI and API, and serve until Ctrl-C."""
    started = time.monotonic()
    serve_config = load_serve_config(config)
    share_changes = {
        "enabled": share if share is not None else (True if share_server else None),  # a server given means share
        "server": share_server,
        "tls_certificate": str(share_tls_certificate.resolve()) if share_tls_certificate else None,
    }
    try:
        serve_config = with_ui_settings(
            serve_config,
            share={k: v for k, v in share_changes.items() if v is not None},
            login=login,
            share_basic_auth=share_basic_auth,
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    keys = _api_keys(serve_config, open_api)
    metrics_port = metrics_port or free_port()
    dashboard_port = (dashboard_port or free_port()) if dashboard else None
    for option, value in (("--metrics-port", metrics_port), ("--dashboard-port", dashboard_port)):
        if value is not None and port_in_use(value):
            console.print(f"[red]Port {value} is in use on 127.0.0.1[/]: choose another with {option} PORT.")
            raise typer.Exit(2)
    # In a process of its own: MLflow and torch, imported here, would hold ~200 MB for as long as the app runs.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as apart:
        apart.submit(_bootstrap_registry, serve_config).result()
    # Ray's and Serve's own lines go to the log files (the dashboard shows them): the status line says it.
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    with console.status("Starting Ray and deploying the applications (first start loads the models)…") as status:
        running = start_local_serve(
            serve_config,
            http_port=port,
            metrics_port=metrics_port,
            dashboard_port=dashboard_port,
            on_status=lambda states: status.update(
                "Deploying: " + ", ".join(f"{name} {state}" for name, state in states.items())
            ),
            log_to_driver=False,
        )
    console.print(f"[green]Ready[/] in {time.monotonic() - started:.0f} s.")
    console.print(f"  UI        {running.url}/ui/")
    console.print(f"  API docs  {running.url}/docs")
    console.print(f"  Readiness {running.url}/api/v1/ready")
    console.print(f"  API keys  {keys}")
    console.print(f"  Metrics   {running.metrics_url}  (Prometheus: docs/operations.md)")
    if running.dashboard_url:
        console.print(f"  Ray       {running.dashboard_url}  (the Ray dashboard: replicas, logs, Serve's metrics)")
    else:
        console.print("  Ray       dashboard off (--dashboard starts it: replicas, logs, Serve's metrics)")
    console.print(f"  Tutorial  curl '{running.url}/Summarizer?txt=Paste+an+article+here.+It+has+sentences.'")
    _print_share_link(serve_config)
    console.print("Press Ctrl-C to stop.")
    # After ray.init, which installs a SIGTERM handler that exits mid-call: `kill PID` now stops as
    # cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("Stopping…")
    finally:
        running.stop()


def _api_keys(serve_config: dict, open_api: bool) -> str:
    """The API keys the app will take, in words; exits when they are malformed, or when there are none
    and the API would listen beyond loopback (unless --open-api)."""
    import ipaddress

    from backend.api.auth import KEYS_ENV, KEYS_FILE_ENV, KeyRing

    if os.environ.get(KEYS_FILE_ENV):  # the replicas run elsewhere than this directory
        os.environ[KEYS_FILE_ENV] = str(Path(os.environ[KEYS_FILE_ENV]).resolve())
    try:
        keys = KeyRing.from_environment().keys()
    except (OSError, ValueError) as exc:
        console.print(f"[red]API keys:[/] {exc}")
        raise typer.Exit(2) from None
    if keys:
        return f"{len(keys)} ({', '.join(key.name for key in keys)}): requests send Authorization: Bearer <key>"
    host = serve_config.get("http_options", {}).get("host", "127.0.0.1")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        loopback = False
    if loopback:
        return "none: the API is open to whoever can reach this machine's loopback"
    if not open_api:
        console.print(
            f"[red]The API would listen on {host} with no API key[/]: anyone who reaches it could use the models "
            f"and add or delete gallery photos. Set {KEYS_ENV} or {KEYS_FILE_ENV} (docs/operations.md), "
            "or pass --open-api to serve it open."
        )
        raise typer.Exit(2)
    console.print(f"[yellow]Warning:[/] the API listens on {host} with no API key (--open-api): anyone may call it.")
    return f"none: open to anyone who reaches {host} (--open-api)"


@cli.command()
def index(
    folder: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="Photos; <folder>/<breed>/<photo> gives the breed."
    ),
    database_url: str | None = typer.Option(
        None, help="Gallery database (default: $RETRIEVER_GALLERY_URL or the data dir's)."
    ),
    kind: str = typer.Option("registry", help="Vision model kind, as the app's Vision user_config."),
    model: str | None = typer.Option(None, help="Its reference, as the app's (default models:/dog-breeds@champion)."),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow store (default: $MLFLOW_TRACKING_URI or the data dir's)."
    ),
    batch_size: int = typer.Option(16, min=1),
) -> None:
    """Add a folder of photos to the gallery, with Ray Data batch inference on a private Ray cluster."""
    import shutil

    import ray
    from tqdm import tqdm

    from backend.deployments.gallery import GallerySettings
    from backend.jobs.index_folder import index_folder
    from backend.models.index import labelled_images
    from retriever.local import start_private_ray

    url = database_url or GallerySettings().url()
    temp_dir = start_private_ray(log_to_driver=False)
    try:
        quiet_ray_data()
        with tqdm(total=len(labelled_images(folder)), unit="photo", desc="Indexing") as bar:
            report = index_folder(folder, url, kind, model, tracking_uri, batch_size, progress=bar.update)
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    console.print(f"[green]Added {report.added} photos[/] ({report.embedder}) to {url}.")
    for source, error in report.failed.items():
        console.print(f"[yellow]Skipped[/] {source}: {error}")


@cli.command()
def train(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, help="Labelled photos: <folder>/<breed>/<photo>."),
    name: str = typer.Option("dog-breeds", help="Registered model to add a version to."),
    alias: str | None = typer.Option(None, help="Point this alias at the new version (the app serves 'champion')."),
    experiment: str | None = typer.Option(None, help="MLflow experiment of the run (default: the model's name)."),
    max_epochs: int = typer.Option(60, min=1),
    patience: int = typer.Option(8, min=1, help="Stop after this many epochs without a better validation loss."),
    learning_rate: float = typer.Option(1e-3),
    seed: int = typer.Option(0),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow store (default: $MLFLOW_TRACKING_URI or the data dir's)."
    ),
) -> None:
    """Train a breed head on a labelled folder with Ray (Data, then Train), log the run to MLflow and
    register the model; with --alias champion the running app switches to it."""
    import shutil

    import ray
    from tqdm import tqdm

    from backend.jobs.train_head import TrainingSettings, labelled_photos, train_head
    from backend.models.registry import Registry
    from retriever.local import start_private_ray

    settings = TrainingSettings(max_epochs=max_epochs, patience=patience, learning_rate=learning_rate, seed=seed)
    try:
        photos = labelled_photos(folder, settings)
    except ValueError as exc:
        console.print(f"[red]Cannot train on {folder}:[/] {exc}")
        raise typer.Exit(1) from None
    with libraries_quiet():
        registry = Registry(tracking_uri)
    # On the terminal's stderr, taken now: libraries_quiet below keeps back the rest.
    bar = tqdm(total=len(photos), unit="photo", desc="Backbone features (Ray Data)", file=sys.stderr)

    def stage(text: str) -> None:
        bar.close()
        console.print(text + "…")

    def epoch(m: dict[str, float]) -> None:
        console.print(
            f"  epoch {m['epoch']:3d}  train loss {m['train_loss']:.3f}  val loss {m['val_loss']:.3f}  "
            f"val accuracy {m['val_accuracy']:.2f}  val macro F1 {m['val_macro_f1']:.2f}"
        )

    # Ray's own progress output stays off (log_to_driver=False): the bar and the epoch lines below say it.
    temp_dir = start_private_ray(state_api=True, log_to_driver=False)
    try:
        quiet_ray_data()
        with libraries_quiet():
            report = train_head(
                folder,
                registry,
                settings,
                model_name=name,
                experiment=experiment,
                alias=alias,
                progress=bar.update,
                on_stage=stage,
                on_epoch=epoch,
            )
    except ValueError as exc:  # too few readable photos after all: say why, no traceback
        bar.close()
        console.print(f"[red]Cannot train on {folder}:[/] {exc}")
        raise typer.Exit(1) from None
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    metrics = report.metrics
    console.print(
        f"[green]Registered {name} version {report.version}[/] "
        f"({len(report.labels)} breeds: {', '.join(report.labels)})\n"
        f"  best epoch {report.best_epoch} of {report.epochs} ({report.seconds_per_epoch * 1000:.0f} ms per epoch): "
        f"validation loss {metrics['best_val_loss']:.3f}, accuracy {metrics['best_val_accuracy']:.2f}, "
        f"macro F1 {metrics['best_val_macro_f1']:.2f}\n"
        f"  run {report.run_id} in {registry.tracking_uri}"
    )
    for source, error in report.skipped.items():
        console.print(f"[yellow]Skipped[/] {source}: {error}")
    if alias:
        console.print(
            f"models:/{name}@{alias} -> version {report.version}: "
            "a running app serving it switches within its follow_alias_s."
        )
    else:
        console.print(f"To serve it: retriever promote {name} {report.version}")


@cli.command()
def prepare(
    config: Path = typer.Option(
        Path("serve_config.yaml"), exists=True, dir_okay=False, help="Serve config to be deployed."
    ),
) -> None:
    """Ready a cluster's shared registry for `serve deploy CONFIG`: register the packaged breed model
    if the config serves it and it is not there (idempotent; `retriever up` does this itself)."""
    _bootstrap_registry(load_serve_config(config))


@cli.command()
def rayservice(
    image: str = typer.Option(
        ..., help="Container image with this project installed, serve_config.yaml in its working dir."
    ),
    gallery_url: str = typer.Option(
        ..., help="The gallery's database: postgresql+psycopg://USER:PASSWORD@HOST:5432/DB."
    ),
    tracking_uri: str = typer.Option(..., help="The MLflow tracking server: http://HOST:5000."),
    config: Path = typer.Option(Path("serve_config.yaml"), exists=True, dir_okay=False, help="Serve config to deploy."),
    name: str = typer.Option("retriever", help="Name of the RayService (and of its Secret, NAME-cluster)."),
    workers: int = typer.Option(2, min=1, help="Worker pods."),
    cpus: int = typer.Option(2, min=1, help="CPUs of each pod."),
    memory: str = typer.Option("8Gi", help="Memory of each pod."),
    api_keys: str | None = typer.Option(
        None, envvar="RETRIEVER_API_KEYS", metavar="NAME=SECRET:SCOPES,...", help="The API's keys (into the Secret)."
    ),
    open_api: bool = typer.Option(False, "--open-api", help="No API keys: anyone who reaches the service may call it."),
    ray_token: str | None = typer.Option(
        None, envvar="RAY_AUTH_TOKEN", help="The cluster's Ray token (default: a new random one, in the Secret)."
    ),
    tls_secret: str | None = typer.Option(
        None, help="A kubernetes.io/tls Secret (with ca.crt) for TLS on Ray's traffic between pods."
    ),
) -> None:
    """Print a KubeRay RayService that deploys the config, and the Secret with the cluster settings that
    every pod reads (`retriever rayservice ... | kubectl apply -f -`)."""
    from backend.api.auth import parse_keys
    from retriever.kuberay import dump, rayservice_manifest

    if api_keys:
        try:
            parse_keys(api_keys)
        except ValueError as exc:
            typer.echo(f"API keys: {exc}", err=True)  # stdout is the manifest
            raise typer.Exit(2) from None
    elif not open_api:
        typer.echo(
            "No API keys: the service listens on the pod network. Set RETRIEVER_API_KEYS (or --api-keys), "
            "or pass --open-api.",
            err=True,
        )
        raise typer.Exit(2)
    manifest = rayservice_manifest(
        load_serve_config(config), name=name, image=image, gallery_url=gallery_url, tracking_uri=tracking_uri,
        workers=workers, cpus=cpus, memory=memory, api_keys=api_keys, ray_token=ray_token, tls_secret=tls_secret,
    )  # fmt: skip
    typer.echo(dump(manifest), nl=False)


@cli.command()
def promote(
    name: str = typer.Argument("dog-breeds", help="Registered model."),
    version: int = typer.Argument(..., help="Version to serve."),
    alias: str = typer.Option("champion", help="The alias the app serves."),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow store (default: $MLFLOW_TRACKING_URI or the data dir's)."
    ),
) -> None:
    """Point an alias at a version: the running app (serving models:/NAME@ALIAS) switches to it live."""
    from backend.models.registry import Registry, RegistryError

    registry = Registry(tracking_uri)
    try:
        registry.resolve(f"models:/{name}/{version}")
    except RegistryError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    registry.set_alias(name, alias, version)
    console.print(f"models:/{name}@{alias} -> version {version}")


@cli.command()
def models(
    name: str = typer.Argument("dog-breeds", help="Registered model."),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow store (default: $MLFLOW_TRACKING_URI or the data dir's)."
    ),
) -> None:
    """List a registered model's versions, their aliases and best validation metrics."""
    from rich.table import Table

    from backend.models.registry import Registry

    registry = Registry(tracking_uri)
    # Search results leave aliases out: they are read from the registered model.
    aliases: dict[str, list[str]] = {}
    for alias, version in registry.client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    table = Table(
        "version", "aliases", "breeds", "val macro F1", "val loss", "run", title=f"{name} in {registry.tracking_uri}"
    )
    for version in sorted(registry.client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version)):
        metrics = registry.client.get_run(version.run_id).data.metrics if version.run_id else {}
        f1, loss = metrics.get("best_val_macro_f1"), metrics.get("best_val_loss")
        table.add_row(
            str(version.version),
            ", ".join(aliases.get(str(version.version), [])),
            str(len(registry.card(f"models:/{name}/{version.version}").labels)),
            f"{f1:.2f}" if f1 is not None else "",
            f"{loss:.3f}" if loss is not None else "",
            (version.run_id or "")[:8],
        )
    console.print(table)


gallery = typer.Typer(
    help="The gallery's photos, in the app's store: list, relabel, delete. A running app's searches see a "
    "change within its refresh_interval_s.",
    no_args_is_help=True,
)
cli.add_typer(gallery, name="gallery")
DATABASE_OPTION = typer.Option(None, help="Gallery database (default: $RETRIEVER_GALLERY_URL or the data dir's).")


def _gallery_store(database_url: str | None):  # noqa: ANN202  (GalleryStore, imported late: SQLAlchemy)
    from backend.deployments.gallery import GallerySettings
    from backend.models.index import GalleryStore

    return GalleryStore(database_url or GallerySettings().url())


@gallery.command("list")
def gallery_list(
    label: str | None = typer.Option(None, help="Only photos with this label."),
    offset: int = typer.Option(0, min=0),
    limit: int = typer.Option(50, min=1, max=500),
    database_url: str | None = DATABASE_OPTION,
) -> None:
    """The gallery's photos, newest first."""
    from rich.table import Table

    page = _gallery_store(database_url).page(offset, limit, label)
    shown = f"{offset + 1}-{offset + len(page.photos)}" if page.photos else "none"
    table = Table("id", "label", "labelled by", "source", "added by", "added at (UTC)")
    table.title = f"Gallery photos {shown} of {page.total}" + (f" labelled {label!r}" if label else "")
    for photo in page.photos:
        when = photo.added_at.strftime("%Y-%m-%d %H:%M")
        table.add_row(str(photo.id), photo.label or "", photo.label_source, photo.source, photo.added_by or "", when)
    console.print(table)


@gallery.command("relabel")
def gallery_relabel(
    photo_id: int = typer.Argument(..., help="The photo's id (retriever gallery list)."),
    label: str = typer.Argument(..., help="The new label; empty: none."),
    database_url: str | None = DATABASE_OPTION,
) -> None:
    """Give a photo another label."""
    from shared.errors import InvalidLabel, PhotoNotFound

    try:
        photo = _gallery_store(database_url).relabel(photo_id, label)
    except (InvalidLabel, PhotoNotFound) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"Photo {photo.id}: " + (f"labelled {photo.label!r}." if photo.label else "no label."))


@gallery.command("delete")
def gallery_delete(
    photo_ids: list[int] = typer.Argument(..., help="The photos' ids (retriever gallery list)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    database_url: str | None = DATABASE_OPTION,
) -> None:
    """Delete photos: their rows, images and embeddings."""
    from shared.errors import PhotoNotFound

    store = _gallery_store(database_url)
    if not yes:
        typer.confirm(f"Delete {len(photo_ids)} photo(s) ({', '.join(map(str, photo_ids))}) for good?", abort=True)
    missing = []
    for photo_id in photo_ids:
        try:
            store.delete(photo_id)
        except PhotoNotFound:
            missing.append(photo_id)
    console.print(f"Deleted {len(photo_ids) - len(missing)} photo(s).")
    if missing:
        console.print(f"[red]No such photo:[/] {', '.join(map(str, missing))}")
        raise typer.Exit(1)


@cli.command("mlflow-ui")
def mlflow_ui(
    port: int = typer.Option(5000),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow store (default: $MLFLOW_TRACKING_URI or the data dir's)."
    ),
) -> None:
    """The MLflow UI over the app's registry (runs, metrics, model versions), on 127.0.0.1."""
    import os
    import sys

    from backend.models.registry import Registry

    registry = Registry(tracking_uri)
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "ui",
        "--backend-store-uri",
        registry.tracking_uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if root := registry.artifact_root():
        command += ["--default-artifact-root", root.as_uri()]
    console.print(f"MLflow UI on http://127.0.0.1:{port} over {registry.tracking_uri}")
    os.execv(command[0], command)


def with_ui_settings(
    serve_config: dict, share: dict, login: str | None = None, share_basic_auth: str | None = None
) -> dict:
    """The config with the UI application's `share` args changed and its logins set, all validated
    (a bad value is a message here, not a failed deployment). The logins travel in the application's
    environment, not its args: Ray logs application args."""
    from retriever.app_args import UiArgs
    from ui.share import LOGIN_ENV, SHARE_BASIC_AUTH_ENV, Credentials

    serve_config = copy.deepcopy(serve_config)
    for app in serve_config.get("applications", []):
        if app.get("import_path") != UI_BUILDER:
            continue
        args = app.setdefault("args", {})
        if share:
            args["share"] = {**(args.get("share") or {}), **share}
        logins = {LOGIN_ENV: login, SHARE_BASIC_AUTH_ENV: share_basic_auth}
        for what, validate, value in [
            ("UI settings", UiArgs.model_validate, args),
            *[(f"{name} login", Credentials.model_validate, value) for name, value in logins.items() if value],
        ]:
            try:
                validate(value)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"Invalid {what}: {problems}") from None
        runtime_env = app.setdefault("runtime_env", {})
        # A new dict: the config's YAML anchors share one env_vars dict between applications.
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **{k: v for k, v in logins.items() if v}}
    return serve_config


def _print_share_link(serve_config: dict) -> None:
    """Waits for the UI replica's share link (if the config asks for one) and prints it, or why not."""
    from ui.share import ShareSettings

    for app in serve_config.get("applications", []):
        if app.get("import_path") != UI_BUILDER:
            continue
        settings = ShareSettings.model_validate((app.get("args") or {}).get("share") or {})
        if not settings.enabled:
            continue
        handle = driver_handle("GradioUI", app["name"])
        with console.status("Opening the share link…"):
            status = handle.share_link.remote(wait_s=settings.timeout_s + 1).result()
        if status.state == "ready":
            console.print(f"  [bold]Share     {status.url}[/]  (public while this runs)")
        else:
            console.print(f"  [yellow]No share link:[/] {status.message or 'still starting'}")


def _bootstrap_registry(serve_config: dict) -> None:
    """Register the packaged breed model if the config serves the registry's default and it is not there:
    the idempotent first-run step, done here so the Vision replicas only load."""
    from backend.deployments.vision import VisionSettings
    from backend.models.registry import CHAMPION, DEFAULT_MODEL, MODEL_NAME, Registry

    for app in serve_config.get("applications", []):
        for deployment in app.get("deployments", []):
            if deployment.get("name") != "Vision":
                continue
            settings = VisionSettings.model_validate(deployment.get("user_config") or {})
            if settings.kind != "registry" or (settings.model or DEFAULT_MODEL) != DEFAULT_MODEL:
                continue
            with console.status("Checking the model registry (first run: registering the packaged model)…"):
                with libraries_quiet():
                    registry = Registry(settings.tracking_uri)
                    version, created = registry.ensure_packaged()
                    served = registry.resolve(DEFAULT_MODEL)
            note = f"registered the packaged model as version {version}; " if created else ""
            console.print(f"Model registry {registry.tracking_uri}: {note}{MODEL_NAME}@{CHAMPION} is {served.name}.")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    cli()
