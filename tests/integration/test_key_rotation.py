"""JOBHOOK_SECRET rotation across restarts on one database (SPEC §1: the first key signs, all verify).

Callback URLs and image links handed out before a rotation keep working while their key is listed;
new ones are signed with the first key; a key taken off the list stops verifying.
"""

from __future__ import annotations

from typing import Any

from service.domain.callbacks import MEDIA_SALT, CallbackTokens
from tests.conftest import Service, ServiceFactory, eventually
from tests.integration.hostile import callback_path, delivery_body, delivery_headers

OLD, NEW = "rotation-old-key", "rotation-new-key"


def token_of(job: dict[str, Any]) -> str:
    return callback_path(job).rsplit("/", 1)[1]


async def deliver(svc: Service, token: str, task_id: str, status: str = "processing") -> tuple[int, Any]:
    response = await svc.client.post(
        f"/callbacks/{token}", content=delivery_body(task_id, status), headers=delivery_headers(task_id, status)
    )
    return response.status_code, response.json()


async def test_old_urls_verify_after_rotation_and_new_ones_use_the_new_key(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_SECRET=OLD) as svc:
        before = await svc.submit(provider="simulator", prompt="signed before", submit=False)
        pictured = await svc.submit(provider="simulator", prompt="an image", output_format="png")
        assert (await svc.wait_finished(pictured["id"]))["status"] == "completed"

        async def mirrored() -> bool:
            return any(e["type"] == "mirror" for e in await svc.events(pictured["id"]))

        await eventually(mirrored)
        old_token = token_of(before)
        assert CallbackTokens([OLD]).verify(old_token) is not None
        old_link = f"/media/{CallbackTokens([OLD], salt=MEDIA_SALT).sign(pictured['id'], '0')}"
        image = (await svc.client.get(old_link)).content
        assert image

    async with jobhook(JOBHOOK_SECRET=f"{NEW},{OLD}") as svc:
        assert await deliver(svc, old_token, "task-before") == (200, {"status": "accepted"})
        assert (await svc.job(before["id"]))["status"] == "processing"
        old_link_answer = await svc.client.get(old_link)
        assert (old_link_answer.status_code, old_link_answer.content) == (200, image)
        after = await svc.submit(provider="simulator", prompt="signed after", submit=False)
        new_token = token_of(after)
        assert CallbackTokens([NEW]).verify(new_token) is not None
        assert CallbackTokens([OLD]).verify(new_token) is None
        # The job from before, read again, is offered a URL under the new key; the old one still works.
        assert CallbackTokens([NEW]).verify(token_of(await svc.job(before["id"]))) is not None

    async with jobhook(JOBHOOK_SECRET=NEW) as svc:
        assert await deliver(svc, old_token, "task-before", "completed") == (
            404,
            {"error": {"code": "not_found", "message": "no such callback"}},
        )
        assert (await svc.client.get(old_link)).status_code == 404
        assert (await svc.job(before["id"]))["status"] == "processing"
        assert await deliver(svc, new_token, "task-after") == (200, {"status": "accepted"})
        new_link = f"/media/{CallbackTokens([NEW], salt=MEDIA_SALT).sign(pictured['id'], '0')}"
        assert (await svc.client.get(new_link)).content == image


async def test_setting_a_key_keeps_the_urls_signed_with_the_generated_one(jobhook: ServiceFactory) -> None:
    """The generated key is kept in the database and stays a verifying key once JOBHOOK_SECRET is set."""
    async with jobhook() as svc:
        assert svc.settings.secrets == ()
        before = await svc.submit(provider="simulator", prompt="signed with the generated key", submit=False)
        generated_token = token_of(before)
        assert CallbackTokens([NEW]).verify(generated_token) is None

    async with jobhook(JOBHOOK_SECRET=NEW) as svc:
        assert await deliver(svc, generated_token, "task-generated") == (200, {"status": "accepted"})
        after = await svc.submit(provider="simulator", prompt="signed with the set key", submit=False)
        assert CallbackTokens([NEW]).verify(token_of(after)) is not None
