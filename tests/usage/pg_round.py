"""Run by ``test_recorder_postgres`` in a process of its own on a PostgreSQL database: one write
round of good rows and rows PostgreSQL refuses or would refuse; prints what became of them (JSON)."""

from __future__ import annotations

import asyncio
import json
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_site.settings")
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from realtime_site.usage.models import ConnectionRecord  # noqa: E402
from realtime_site.usage.recorder import Usage, UsageRecorder  # noqa: E402


async def main() -> dict:
    user = await get_user_model().objects.acreate(username="pia")
    usages = {
        "good": Usage(user_id=user.pk, app="local/echo", auth_method="jwt", frames_in=1),
        "long_app": Usage(user_id=user.pk, app="o/" + "x" * 199, auth_method="jwt", frames_in=2),
        "nul_agent": Usage(user_id=user.pk, app="local/echo", auth_method="jwt", user_agent="a\x00b", frames_in=3),
        "huge_user": Usage(user_id=2**40, app="local/echo", auth_method="jwt", frames_in=4),  # integer column
        "gone_user": Usage(user_id=user.pk + 1000, app="local/echo", auth_method="jwt", frames_in=5),
    }
    rec = UsageRecorder()
    for usage in usages.values():
        rec.open(usage)
    await asyncio.gather(*(rec.close(u, 1000) for u in usages.values()))
    rows = {r.id: r async for r in ConnectionRecord.objects.all()}
    return {
        "written": {name: rows[u.id].frames_in for name, u in usages.items() if u.id in rows},
        "app_length": len(rows[usages["long_app"].id].app),
        "agent": rows[usages["nul_agent"].id].user_agent,
        "set_aside": {name: e for name, u in usages.items() for s, e in rec.set_aside if s is u},
        "backlog": rec.backlog(),
    }


if __name__ == "__main__":
    call_command("migrate", verbosity=0)
    print("RESULT " + json.dumps(asyncio.run(main())))
