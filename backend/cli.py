"""`retriever`: the command line of the project."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import typer
from rich.console import Console

from backend.local import apply_local_env, start_local_serve

apply_local_env()  # before anything imports ray

cli = typer.Typer(help="Retriever: ML models behind a Gradio UI and an HTTP API, served by Ray Serve.", no_args_is_help=True)
console = Console()


@cli.callback()
def _root() -> None:
    """Commands of the Retriever project."""


@cli.command()
def up(
    config: Path = typer.Option(Path("serve_config.yaml"), exists=True, dir_okay=False, help="Serve config to deploy."),
    port: int | None = typer.Option(None, help="HTTP port (default: the config's http_options.port)."),
) -> None:
    """Start a private Ray cluster on this machine, deploy the UI and API, and serve until Ctrl-C."""
    started = time.monotonic()
    with console.status("Starting Ray and deploying the applications (first start loads the models)…") as status:
        running = start_local_serve(
            config,
            http_port=port,
            on_status=lambda states: status.update(
                "Deploying: " + ", ".join(f"{name} {state}" for name, state in states.items())
            ),
        )
    console.print(f"[green]Ready[/] in {time.monotonic() - started:.0f} s.")
    console.print(f"  UI        {running.url}/ui/")
    console.print(f"  API docs  {running.url}/docs")
    console.print(f"  Readiness {running.url}/api/v1/ready")
    console.print(f"  Tutorial  curl '{running.url}/Summarizer?txt=Paste+an+article+here.+It+has+sentences.'")
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


@cli.command()
def index(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, help="Photos; <folder>/<breed>/<photo> gives the breed."),
    database_url: str | None = typer.Option(None, help="Gallery database (default: the app's, under $RETRIEVER_DATA_DIR)."),
    kind: str = typer.Option("efficientnet-lite0", help="Vision model: the one the app serves."),
    model: str | None = typer.Option(None, help="Its weights / hub id / path, as in serve_config.yaml."),
    batch_size: int = typer.Option(16, min=1),
) -> None:
    """Add a folder of photos to the gallery, with Ray Data batch inference on a private Ray cluster."""
    import shutil

    import ray
    from tqdm import tqdm

    from backend.gallery import GallerySettings
    from backend.jobs.index_folder import index_folder
    from backend.local import start_private_ray
    from backend.models.index import labelled_images

    url = database_url or GallerySettings().url()
    temp_dir = start_private_ray(log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours below counts photos
        with tqdm(total=len(labelled_images(folder)), unit="photo", desc="Indexing") as bar:
            report = index_folder(folder, url, kind, model, batch_size, progress=bar.update)
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    console.print(f"[green]Added {report.added} photos[/] ({report.embedder}) to {url}.")
    for source, error in report.failed.items():
        console.print(f"[yellow]Skipped[/] {source}: {error}")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    cli()
