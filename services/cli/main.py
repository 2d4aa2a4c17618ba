"""`hookline`: the command line over Hookline's REST API (and, for admins, its
dead-letter topic). `main()` is the composition root: settings from the environment,
the API client, the commands; every failure ends in one line and a non-zero exit."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from services.cli.client import ApiClient, CliError
from services.cli.session import CliSettings, Session


class HooklineGroup(click.Group):
    """Turns every failure into one line on stderr and exit status 1: never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            raise click.ClickException(exc.message) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            raise click.Abort() from None
        except BrokenPipeError:
            raise  # the reader left (`| head`): main() ends quietly
        except Exception as exc:  # the last resort: a bug still ends in one line
            raise click.ClickException(f"unexpected error: {type(exc).__name__}: {exc}") from None


@click.group(cls=HooklineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", default=None, help="The API's base URL [env HOOKLINE_URL].")
@click.option("--token", default=None, help="A bearer token [env HOOKLINE_TOKEN].")
@click.version_option(package_name="hookline", prog_name="hookline")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None) -> None:
    """Hookline from the command line: webhooks, deliveries, events, inbound webhooks
    and (for admins) the dead-letter topic.

    Talks to the REST API at HOOKLINE_URL (default http://127.0.0.1:8080) with the
    bearer token HOOKLINE_TOKEN; `dlq` reads Kafka at HOOKLINE_KAFKA_BOOTSTRAP."""
    env = CliSettings.from_env(os.environ)
    settings = CliSettings(
        url=url or env.url, token=token or env.token, kafka_bootstrap=env.kafka_bootstrap
    )
    try:
        settings = settings.checked()
    except CliError as exc:
        raise click.ClickException(exc.message) from None
    ctx.obj = Session(settings=settings, api=ApiClient(settings.url, settings.token))


def _register() -> None:
    from services.cli import deliveries, dlq, hooks, inbound, tail

    cli.add_command(hooks.hooks)
    cli.add_command(deliveries.deliveries)
    cli.add_command(deliveries.redeliver)
    cli.add_command(deliveries.recover)
    cli.add_command(tail.tail)
    cli.add_command(inbound.events)
    cli.add_command(inbound.inbound)
    cli.add_command(dlq.dlq)


_register()


def main() -> None:
    try:
        cli.main(prog_name="hookline")
    except BrokenPipeError:
        # Python would complain again when flushing stdout at exit: point it at devnull.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
