"""The console's transcript search and the call page's analytics lanes, in headless Chromium against
the whole stack: search, see the match highlighted, click, and the recording is cued at the utterance."""

from __future__ import annotations

from playwright.async_api import expect

from tests.console.conftest import Console
from tests.console.test_browser import end_call, wait_for_user_transcript
from tests.harness import Stack


async def test_search_highlights_and_a_click_cues_the_recording(console: Console, stack: Stack) -> None:
    call_id = await stack.place_call()
    await wait_for_user_transcript(stack, call_id)
    await end_call(stack, call_id)
    await stack.wait_for_recording(call_id)

    await console.sign_in()
    await console.page.get_by_label("Search what was said").fill('"cancel my" plan')
    await console.page.get_by_role("button", name="Search").click()
    hit = console.page.locator("#search-results .hit", has_text=call_id[:8])
    await expect(hit).to_have_count(1)
    await expect(hit.locator("mark")).to_have_text(["cancel my", "plan"])
    await expect(hit).to_contain_text("Customer")
    await console.screenshot("search")

    await console.page.get_by_label("Search what was said").fill("zebra")
    await console.page.get_by_role("button", name="Search").click()
    await expect(console.page.locator("#search-empty")).to_be_visible()
    await console.page.get_by_label("Search what was said").fill("!!")
    await console.page.get_by_role("button", name="Search").click()
    await expect(console.page.locator("#search-error")).to_contain_text("no word to search for")

    await console.page.get_by_label("Search what was said").fill("cancel")
    await console.page.get_by_role("button", name="Search").click()
    found = (await stack.client.get("/v1/search/transcripts", params={"q": "cancel", "callId": call_id})).json()
    offset = found["data"][0]["offsetSeconds"]
    await console.page.locator("#search-results .hit", has_text=call_id[:8]).get_by_role("link").click()
    await console.page.wait_for_url(f"**/console/calls/{call_id}?t={offset}")
    await console.page.wait_for_function(
        f"Math.abs(document.getElementById('recording-audio').currentTime - {offset}) < 1.0"
    )
    await expect(console.page.locator("#lane-customer .turn").first).to_be_attached(timeout=20_000)
    await expect(console.page.locator("#lane-assistant .turn").first).to_be_attached()
    await expect(console.page.locator("#analytics-facts")).to_contain_text("Longest silence")
    # The browser logs the refused query's 400 itself; nothing else went wrong.
    assert [error for error in console.errors if "status of 400" not in error or "q=!!" not in error] == []
