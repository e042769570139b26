"""The console in real headless Chromium against the whole stack: sign-in, a live call, rules.

Each test also regenerates a screenshot in ``docs/screenshots/`` (linked from the README) and fails on
any console error or uncaught page error.
"""

from __future__ import annotations

import asyncio
import wave

from playwright.async_api import expect

from service.simulator import VapiSimulator
from tests.console.conftest import Console
from tests.harness import Stack, eventually

DISCLOSURE = {
    "name": "recording-disclosure",
    "on": "call.answered",
    "say": "This call is recorded, {{ call.customer.name }}.",
}
CANCEL_OFFER = {
    "name": "cancel-offer",
    "on": "transcript",
    "if": 'event.role == "user" && event.transcript.matches("(?i)cancel")',
    "say": "Before you go, may I offer you a discount?",
}


def says(sim: VapiSimulator, call_id: str) -> list[str]:
    return [str(m.get("content")) for m in sim.control_received(call_id) if m.get("type") == "say"]


async def end_call(stack: Stack, call_id: str) -> None:
    ended = await stack.client.post(f"/v1/calls/{call_id}/control", json={"type": "end-call"})
    assert ended.status_code == 202, ended.text
    await stack.sim.wait_for_status(call_id, "ended")


async def wait_for_user_transcript(stack: Stack, call_id: str) -> None:
    """Until the customer's final transcript is stored (by the webhook: the listen copy may come first)."""

    async def stored() -> bool:
        return any(
            event["source"] == "vapi"
            and event["type"] == "transcript"
            and event["payload"].get("role") == "user"
            and event["payload"].get("transcriptType") == "final"
            for event in await stack.events(call_id)
        )

    await eventually(stored, interval=0.05)


async def test_a_bad_key_is_refused_with_a_clear_message(console: Console) -> None:
    await console.open("/console/")
    await console.page.wait_for_url("**/console/sign-in?next=*")
    await console.screenshot("sign-in")

    await console.page.get_by_label("API key").fill("not-a-key")
    await console.page.get_by_role("button", name="Sign in").click()
    await expect(console.page.get_by_role("alert")).to_have_text(
        "Invalid API key: Switchboard does not know it (or it was revoked)."
    )
    await expect(console.page.get_by_label("API key")).to_be_focused()
    stored = await console.page.evaluate("[sessionStorage.length, localStorage.length, document.cookie]")
    assert stored == [0, 0, ""], "a refused key is kept nowhere"
    # The one error Chromium itself logs: the 401 answer to the key check.
    (logged,) = console.errors
    assert "401" in logged


async def test_a_live_call_from_list_to_recording(console: Console, stack: Stack) -> None:
    assert (await stack.client.put(f"/v1/rules/{DISCLOSURE['name']}", json=DISCLOSURE)).status_code in (200, 201)
    await console.sign_in()
    key_places = await console.page.evaluate("[sessionStorage.length, localStorage.length, document.cookie]")
    assert key_places == [1, 0, ""], "the key lives in sessionStorage only"
    await expect(console.page.locator("#feed-state")).to_have_text("Live")

    call_id = await stack.place_call()
    row = console.page.locator(f'tr[data-call-id="{call_id}"]')
    await expect(row.locator(".badge")).to_have_text("in-progress")
    await expect(row).to_contain_text("Ada · +14155550123")
    await expect(row).to_contain_text("● recording")
    await console.screenshot("calls")

    await row.get_by_role("link").click()
    await console.page.wait_for_url(f"**/console/calls/{call_id}")
    timeline = console.page.locator("#timeline")
    await expect(timeline.locator(".from-customer")).to_contain_text("I want to cancel my plan.")
    await expect(timeline.locator(".from-assistant").first).to_contain_text("How can I help?")
    await expect(timeline).to_contain_text("recording-disclosure")
    await expect(timeline.locator(".from-customer")).to_have_count(1)  # webhook and listen copies: one bubble

    await console.page.get_by_label("Make the assistant say").fill("A supervisor has joined the call.")
    await console.page.get_by_role("button", name="Say", exact=True).click()
    await expect(console.page.locator("#say-status")).to_contain_text("Sent at")
    assert "A supervisor has joined the call." in says(stack.sim, call_id)
    await expect(timeline.locator(".from-assistant")).to_contain_text(["A supervisor has joined the call."])

    await console.page.get_by_role("button", name="Listen live").click()
    await expect(console.page.locator("#listen-status")).to_contain_text("s received")
    await expect(console.page.get_by_role("button", name="Stop listening")).to_have_attribute("aria-pressed", "true")
    await console.page.get_by_role("button", name="Stop listening").click()

    # The control buttons beside Say: mute and unmute, a refused transfer number, then end the call.
    await console.page.get_by_role("button", name="Mute assistant").click()
    await expect(console.page.get_by_role("button", name="Unmute assistant")).to_have_attribute("aria-pressed", "true")
    await console.page.get_by_role("button", name="Unmute assistant").click()
    await expect(console.page.get_by_role("button", name="Mute assistant")).to_be_enabled()
    await console.page.get_by_label("Transfer to (E.164 number)").fill("555")
    await console.page.get_by_role("button", name="Transfer", exact=True).click()
    await expect(console.page.locator("#control-status")).to_contain_text("E.164")
    console.page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await console.page.get_by_role("button", name="End call").click()
    await stack.sim.wait_for_status(call_id, "ended")
    controls = [m.get("control", m["type"]) for m in stack.sim.control_received(call_id) if m["type"] != "say"]
    assert controls == ["mute-assistant", "unmute-assistant", "end-call"]
    audio = console.page.locator("#recording-audio")
    await expect(audio).to_be_visible()
    await console.page.wait_for_function("document.getElementById('recording-audio').duration > 0")
    download_link = console.page.get_by_role("link", name="Download WAV")
    async with console.page.expect_download() as started:
        await download_link.click()
    download = await started.value
    assert download.suggested_filename == f"{call_id}.wav"
    with wave.open(str(await download.path())) as parsed:
        assert (parsed.getnchannels(), parsed.getframerate(), parsed.getsampwidth()) == (2, 16000, 2)
        assert parsed.getnframes() > 16000, "more than a second of audio"
    await expect(console.page.locator("#call-status")).to_have_text("ended")
    # What Vapi's end-of-call report said: the outcome, the cost and its items, the summary.
    ended = stack.sim.calls[call_id]
    await expect(console.page.locator("#call-outcome")).to_contain_text(str(ended.ended_reason))
    await expect(console.page.locator("#call-cost")).to_contain_text(f"${ended.cost:.4f} (transport $")
    await expect(console.page.locator("#call-summary")).to_have_text(ended.summary())
    await expect(console.page.get_by_label("Make the assistant say")).to_be_disabled()
    await console.page.evaluate("document.getElementById('timeline').scrollTop = 0")
    await console.screenshot("call", full_page=True)
    assert console.errors == []


async def test_rule_errors_show_inline_and_a_rule_dry_runs(console: Console, stack: Stack) -> None:
    assert (await stack.client.put(f"/v1/rules/{CANCEL_OFFER['name']}", json=CANCEL_OFFER)).status_code in (200, 201)
    call_id = await stack.place_call(customer={"number": "+14155550199", "name": "Grace"})
    await wait_for_user_transcript(stack, call_id)
    await end_call(stack, call_id)

    await console.sign_in()
    await console.page.get_by_role("link", name="Rules").click()
    await console.page.get_by_role("button", name="cancel-offer").click()
    condition = console.page.get_by_label("Condition (CEL, optional)")
    await expect(condition).to_have_value(CANCEL_OFFER["if"])

    await condition.fill('event.role == "user" &&')
    await console.page.get_by_role("button", name="Save").click()
    error = console.page.locator("#rule-if-error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("invalid CEL")
    await expect(condition).to_have_attribute("aria-invalid", "true")
    await expect(condition).to_be_focused()
    stored = (await stack.client.get("/v1/rules/cancel-offer")).json()
    assert stored["document"]["if"] == CANCEL_OFFER["if"], "an invalid edit is not saved"
    await console.screenshot("rules-error")

    await condition.fill('event.role == "user" && event.transcript.contains("plan")')
    await console.page.get_by_role("button", name="Save").click()
    await expect(console.page.locator("#rule-status")).to_have_text("Saved cancel-offer.")
    await expect(error).to_be_hidden()
    stored = (await stack.client.get("/v1/rules/cancel-offer")).json()
    assert stored["document"]["if"] == 'event.role == "user" && event.transcript.contains("plan")'

    await console.page.get_by_label("Call", exact=True).select_option(call_id)
    await console.page.get_by_role("button", name="Dry run").click()
    await expect(console.page.locator("#dry-run-status")).to_contain_text("1 of")
    fired = console.page.locator("#dry-run-body tr", has_text="fires")
    await expect(fired).to_have_count(1)
    await expect(fired).to_contain_text("“Before you go, may I offer you a discount?”")
    await console.screenshot("rules", full_page=True)
    assert console.errors == []
