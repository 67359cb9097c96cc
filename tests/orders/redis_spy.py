"""What the limiter's and nudges' Redis client (django-redis "default") sends, one entry per
round trip: a command, or a pipeline of commands. A spy on the Redis library, not a mock:
every command still goes to the real Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django_redis import get_redis_connection


@dataclass(frozen=True)
class RoundTrip:
    when: float  # time.monotonic()
    commands: tuple[tuple[str, ...], ...]  # (name, first key or argument) per command

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(command[0] for command in self.commands)


def spy_on_redis(monkeypatch) -> list[RoundTrip]:
    client = get_redis_connection("default")
    sent: list[RoundTrip] = []
    execute_command = client.execute_command
    pipeline = client.pipeline

    def counting_command(*args, **options):
        sent.append(RoundTrip(time.monotonic(), ((str(args[0]), str(args[1:2])),)))
        return execute_command(*args, **options)

    def counting_pipeline(*args, **kwargs):
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute

        def counting_execute(*eargs, **ekwargs):
            commands = tuple((str(c[0][0]), str(c[0][1:2])) for c in pipe.command_stack)
            sent.append(RoundTrip(time.monotonic(), commands))
            return execute(*eargs, **ekwargs)

        pipe.execute = counting_execute
        return pipe

    monkeypatch.setattr(client, "execute_command", counting_command)
    monkeypatch.setattr(client, "pipeline", counting_pipeline)
    return sent
