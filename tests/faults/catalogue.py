# ruff: noqa: E501  (a table of long test ids and prose, one case per entry)
"""The fault and abuse suite: every fault Supersede is tested against, what it does, what it keeps,
and the tests that show it. ``pytest -m fault`` runs exactly these tests (``tests/conftest.py``
marks them); the README's reliability table is :func:`markdown` of this list (checked by
``test_catalogue.py``). Run ``python -m tests.faults.catalogue`` to print the table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    group: str
    fault: str
    behaviour: str
    kept: str
    #: Test node-id prefixes (a file, or ``file::test``) that show it.
    tests: tuple[str, ...]


W, H, F = (
    "tests/watcher/test_webhook.py",
    "tests/watcher/test_hub_source.py",
    "tests/watcher/test_feeds.py",
)
S, J, P = (
    "tests/watcher/test_scheduler.py",
    "tests/workers/test_jobs.py",
    "tests/workers/test_pipeline.py",
)
C, K, M = (
    "tests/workers/test_celery_integration.py",
    "tests/workers/test_slack.py",
    "tests/benchmarks/test_models.py",
)
A, ST = "tests/benchmarks/test_api.py", "tests/watcher/test_state.py"
T = "tests/workers/test_topology.py"

FAULTS: tuple[Fault, ...] = (
    # ---------------------------------------------------------------- malicious or broken models
    Fault("model", "pickle-only weights (model or adapter `*.bin`)",
          "refused before any download; the job is `skipped` and notified",
          "no pickle file fetched or opened",
          (f"{M}::test_hub_pickle_only_model_is_refused_before_any_download",
           f"{M}::test_hub_adapter_with_only_bin_is_refused",
           f"{P}::test_a_refused_candidate_is_skipped_with_the_reason",
           "tests/faults/test_model_faults.py")),
    Fault("model", "config asking for remote code (`auto_map`), not allow-listed",
          "refused; `*.py` never downloaded; `skipped` with the reason",
          "the repo's code never runs (a sentinel file never appears)",
          (f"{M}::test_hub_remote_code_is_never_downloaded_or_run",
           "tests/faults/test_model_faults.py")),
    Fault("model", "`main` moves between screening and loading",
          "the pinned sha is what gets downloaded and scored", "results keyed by that sha",
          (f"{M}::test_revision_is_pinned_when_main_moves",)),
    Fault("model", "gated repo without access", "`GatedModelError` naming `HF_TOKEN`; `skipped`",
          "nothing downloaded",
          (f"{M}::test_gated_repo_needs_a_granted_token", "tests/faults/test_model_faults.py")),
    Fault("model", "corrupt safetensors header", "the job ends with a clear reason, notified",
          "nothing half-downloaded left in the cache", ("tests/faults/test_model_faults.py",)),
    Fault("model", "unknown repo or revision, unreachable Hub while loading",
          "`ModelNotFound` (fatal) or `HubUnavailable` (retried)", "the store untouched",
          (f"{M}::test_missing_repo_and_revision_are_not_found",
           f"{M}::test_unreachable_hub_is_retryable")),
    Fault("model", "model too large for every GPU queue", "`skipped: too large`, notified",
          "no crash, nothing loaded",
          (f"{P}::test_a_model_too_large_for_every_queue_is_skipped_and_notified",
           "tests/workers/test_app.py::test_routing_by_memory")),
    Fault("model", "a release under a licence not allowed (`cc-by-nc-4.0`), or too large for the serving GPUs (`deploy`)",
          "`BLOCKED` with the reasons, read from the Hub's metadata and `config.json`; a fine-tune whose `deploy` allows it still gets it benchmarked",
          "no weight of it downloaded, no GPU time spent",
          ("tests/benchmarks/test_deployable_verdict.py::test_a_licence_not_allowed_blocks_before_any_download",
           "tests/benchmarks/test_deployable_verdict.py::test_too_large_for_the_serving_gpus_blocks_naming_both_figures",
           "tests/workers/test_deploy_pipeline.py")),
    Fault("model", "a vendor's own licence, `other` with a name not allowed, or no licence found",
          "`NEEDS_REVIEW` naming the licence (and its link)", "the scores, for the review",
          ("tests/benchmarks/test_deployable_verdict.py::test_a_custom_licence_needs_review",)),
    Fault("model", "a re-tune whose training rows are also evaluated, or whose estimated training is over `retune.max_gpu_hours`",
          "refused before any weight is loaded, with the count of leaked rows or the estimate; the verdict stays two-way and says why",
          "the plain verdict, on time",
          ("tests/benchmarks/test_retune.py::test_training_rows_that_are_also_evaluated_are_refused_with_the_count",
           "tests/benchmarks/test_retune.py::test_a_run_over_budget_is_refused_with_the_estimate",
           "tests/workers/test_retune_pipeline.py::test_training_rows_that_are_evaluated_refuse_the_re_tune_with_the_count")),
    Fault("model", "a worker killed or failing mid re-tune (training or writing the adapter)",
          "nothing at the adapter's final path (written to a temporary folder, renamed into place when complete; stale ones removed later); the job is retried",
          "the trained adapter of a finished run, reused by key",
          ("tests/benchmarks/test_retune.py::test_a_failure_mid_training_leaves_no_adapter",
           "tests/benchmarks/test_retune.py::test_a_failed_write_leaves_no_adapter_and_stale_partials_are_removed")),
    # ---------------------------------------------------------------- outages
    Fault("outage", "Hub 429 with a short `Retry-After`", "waited out by huggingface_hub's back-off",
          "every release, once", (f"{H}::test_rate_limit_with_a_short_retry_after_is_waited_out",)),
    Fault("outage", "Hub 429 with a long `Retry-After` or an exhausted `RateLimit` header",
          "the Hub source backs off until then (no sleep in the poll; other authors not asked)",
          "the back-off, across restarts", (f"{H}::test_a_long_rate_limit_backs_the_source_off",)),
    Fault("outage", "Hub 500, Hub hangs, one author failing",
          "retried with timeouts; the failing author reported", "the other authors' releases",
          (f"{H}::test_server_errors_are_retried_then_reported",
           f"{H}::test_a_hung_hub_times_out_and_the_retry_succeeds",
           f"{H}::test_one_failing_author_does_not_stop_the_others",
           f"{S}::test_a_failing_hub_does_not_stop_the_feeds",
           f"{M}::test_hub_failures_are_retryable")),
    Fault("outage", "no network at all (`supersede poll --once` offline)",
          "one connection tried per host before any retry: every source given up for the pass "
          "at once, one line each naming the address and why; exit 75 in about a second",
          "the sources asked again at the next pass",
          ("tests/supersede/test_front_door.py::test_poll_once_offline_gives_each_source_up_at_once",)),
    Fault("outage", "feed stalls mid-body, drips, is 50 MB (with or without a length)",
          "the pass fails (read timeout, deadline, byte cap) and the feed backs off",
          "nothing half-read recorded; other sources go on",
          (f"{F}::test_stalled_feed_fails_fast_backs_off_then_recovers",
           f"{F}::test_dripping_body_is_cut_at_the_deadline",
           f"{F}::test_huge_feed_is_refused_at_the_byte_cap",
           f"{F}::test_cap_refuses_before_reading_a_declared_oversized_body")),
    Fault("outage", "malformed feed, an error page served with 200, feed 429/5xx/404",
          "logged and skipped, with back-off", "the other sources' events",
          (f"{F}::test_malformed_feed_fails_alone_in_a_pass",
           f"{F}::test_a_200_that_is_not_a_feed_fails",
           f"{F}::test_rate_limited_feed_backs_off_for_retry_after",
           f"{F}::test_missing_feed_fails_without_retry_after")),
    Fault("outage", "a feed post links a model not on the Hub yet",
          "the entry waits and the next read is unconditional", "the post is released later",
          (f"{F}::test_entry_linking_a_repo_not_on_the_hub_yet_is_released_once_it_is",
           f"{F}::test_waiting_entry_is_retried_on_the_next_pass_of_an_unchanged_feed")),
    Fault("outage", "Hub down while a webhook is delivered", "`503` with `Retry-After`",
          "the release, on redelivery or by polling",
          (f"{W}::test_hub_down_asks_the_hub_to_redeliver_later",
           f"{W}::test_hub_unreachable_is_retryable_with_a_default_wait")),
    Fault("outage", "Slack 429 with `Retry-After`, Slack 500", "waited out / retried",
          "one message",
          (f"{K}::test_rate_limited_then_accepted_is_one_message",
           f"{K}::test_server_errors_are_retried_without_duplicates")),
    Fault("outage", "Slack accepted a post but the reply was lost (connection reset)",
          "the next try finds the message by its metadata marker", "one message",
          (f"{K}::test_a_reply_lost_after_slack_accepted_the_post_is_not_posted_twice",)),
    Fault("outage", "Slack channel not found, bad token", "logged; retried by the reconciler",
          "the verdict, un-notified until fixed",
          (f"{K}::test_a_refused_channel_is_a_fatal_error",)),
    Fault("outage", "API endpoint 429/5xx, malformed replies, hangs, keeps failing",
          "retried with full-jitter back-off honouring `Retry-After`; then unavailable",
          "every example answered once, in order",
          (f"{A}::test_429_retry_after_is_honoured_and_nothing_is_lost",
           f"{A}::test_persistent_503_is_unavailable_after_capped_backoff",
           f"{A}::test_malformed_replies_are_retried", f"{A}::test_hung_endpoint_times_out")),
    Fault("outage", "Redis down at start-up", "`supersede run` retries briefly, exits 75 naming "
          "the broker", "no crash loop, no traceback",
          (f"{C}::test_supersede_run_exits_75_when_redis_is_down",)),
    Fault("outage", "Redis restarted with its data lost mid-run",
          "the reconciler sends the lost job again", "the job; one verdict",
          (f"{C}::test_a_redis_restart_that_loses_the_queue_is_recovered_by_reconcile",
           f"{P}::test_the_reconciler_resends_what_was_lost")),
    Fault("outage", "PostgreSQL store restart (every connection killed)",
          "the next operation reconnects (`pool_pre_ping`)", "what was recorded, exactly once",
          ("tests/faults/test_store_faults.py",)),
    # ---------------------------------------------------------------- process faults
    Fault("process", "kill -9 of a worker's pool child, or of the worker, mid-benchmark",
          "the message is redelivered (acks late, reject on worker lost) or reconciled; the job "
          "is taken over at once when its holder's process is gone from this host, else after "
          "the lease expires", "one benchmark result, one verdict, one notification",
          (f"{C}::test_a_worker_killed_mid_benchmark_leaves_one_benchmark_and_one_verdict",
           f"{J}::test_an_expired_lease_is_taken_over_and_the_old_owner_records_nothing",
           f"{J}::test_a_lease_held_by_a_dead_process_on_this_host_is_taken_at_once")),
    Fault("process", "the same release planned or sent many times, duplicate deliveries",
          "a deterministic job key; a duplicate finds the job running or done",
          "one benchmark, one verdict per fine-tune",
          (f"{C}::test_the_same_release_enqueued_many_times_is_benchmarked_once",
           f"{J}::test_concurrent_claims_admit_exactly_one",
           f"{P}::test_a_release_plans_one_benchmark_and_a_verdict_per_finetune")),
    Fault("process", "a job that always fails", "retried, then `failed` at the attempt cap",
          "the reason and attempts; a failure notice with the re-run command",
          (f"{C}::test_a_job_that_always_fails_stops_at_the_attempt_cap_with_its_reason",
           f"{J}::test_retry_then_the_attempt_cap",
           f"{P}::test_a_retryable_failure_is_retried_then_capped")),
    Fault("process", "SIGTERM or SIGINT of the daemon mid-poll",
          "clean stop within 10 s, lease released, exit 0", "nothing half-recorded",
          (f"{S}::test_sigterm_during_a_hung_poll_exits_cleanly_and_frees_the_lease",
           f"{S}::test_sigint_stops_like_sigterm")),
    Fault("process", "two daemons started against one store",
          "the second exits (code 2) naming the holder, or waits with `--wait`",
          "one scheduler's work, published once",
          (f"{S}::test_a_second_daemon_on_the_same_store_exits_naming_the_first",
           f"{S}::test_a_second_daemon_refuses_to_start_then_takes_over_with_wait")),
    Fault("process", "restarts and processes racing on one release or a new store",
          "`ON CONFLICT DO NOTHING`, an outbox, migrations run under a lock",
          "one release, published once",
          (f"{ST}::test_threads_racing_on_one_release_record_it_once",
           f"{ST}::test_processes_racing_on_one_release_record_it_once",
           f"{ST}::test_processes_opening_a_new_store_at_once_all_succeed",
           f"{S}::test_a_release_is_printed_once_across_restarts",
           f"{H}::test_a_restart_announces_nothing_again")),
    Fault("process", "a crash between Slack's reply and the record",
          "after restart the marker is found in the channel", "one message",
          (f"{K}::test_a_crash_between_the_post_and_the_record_does_not_post_twice_after_restart",)),
    Fault("process", "`supersede run` killed with -9, then restarted",
          "the restart takes the dead holder's lease at once (same host, PID gone); a live or "
          "other-host holder is still refused", "one scheduler at a time; racing restarts take it once",
          (f"{S}::test_run_killed_with_sigkill_restarts_at_once",
           f"{S}::test_the_lease_of_a_dead_holder_on_this_host_is_taken_at_once",
           f"{S}::test_the_lease_of_a_live_holder_or_another_host_is_not_taken",
           f"{S}::test_restarts_racing_for_a_dead_holder_take_it_once")),
    # ---------------------------------------------------------------- topology and stored results
    Fault("topology", "the Hub down (or stopped) after the benchmark job finished",
          "the verdict job reads both results from the store by key: no Hub request, no download, "
          "no model (the default worker cannot even import torch)", "the verdict, notified once",
          (f"{T}::test_a_verdict_arrives_with_the_hub_stopped_after_the_benchmark",
           f"{T}::test_verdicts_are_judged_from_stored_results_on_the_default_worker",
           f"{P}::test_a_verdict_job_reads_the_store_only")),
    Fault("topology", "the result rows wiped between benchmark and verdict",
          "the verdict waits again and the benchmark job goes back to its own GPU queue; never "
          "scored on the default queue", "one verdict per fine-tune, one Slack message each",
          (f"{T}::test_results_wiped_before_the_verdict_send_the_benchmark_back",
           f"{P}::test_a_verdict_whose_results_are_gone_sends_the_benchmark_back")),
    Fault("topology", "a message the broker refused (Redis down at send time)",
          "the job is marked; the reconciler's next pass sends it again once the broker answers",
          "the job, queued, never waiting out `queued_timeout`",
          (f"{P}::test_a_send_the_broker_refused_is_sent_again_at_the_next_pass",)),
    # ---------------------------------------------------------------- Slack
    Fault("slack", "two verdicts of one release notified at once by two processes, first post 429",
          "the release message is claimed in the outbox (compare-and-set with a lease); only the "
          "holder posts, the other waits for its `ts`",
          "one parent message per release, one reply per fine-tune under it (20 races in a row)",
          ("tests/workers/test_slack_race.py",
           f"{K}::test_two_verdicts_of_one_release_at_once_make_one_parent")),
    Fault("slack", "Slack unreachable, 5xx on lookups, `Retry-After` beyond the cap",
          "one retry loop over posts, updates and lookups: `max_attempts` tries, one warning per "
          "retry, `Retry-After` waited up to 30 s, then retried later by the reconciler",
          "no post while a lookup cannot answer; never a duplicate",
          (f"{K}::test_slack_unreachable_is_tried_max_attempts_times_then_retryable",
           f"{K}::test_a_failing_lookup_is_retried_inside_the_loop",
           f"{K}::test_a_retry_after_beyond_the_cap_ends_the_delivery_with_it")),
    Fault("slack", "worker killed while holding a message's claim",
          "the claim runs out after one lease; the next delivery looks in the channel first",
          "the message once", (f"{K}::test_a_claim_left_by_a_killed_worker_runs_out_and_the_next_looks_first",)),
    Fault("slack", "a channel archived (or a token revoked) after start-up",
          "recorded on the job with its reason (`supersede status`), logged once with the "
          "message, retried by the reconciler with a doubling wait (`workers.notify_retry`)",
          "the verdict, notified once it can be",
          (f"{P}::test_a_failed_notification_is_recorded_and_retried_with_back_off",)),
    Fault("slack", "Slack unreachable while the demo runs (token and channel set)",
          "one warning line per try with the next try's time, no traceback; the demo ends with "
          "\"verdicts ready, Slack delivery pending (retrying)\"",
          "the verdicts, delivered by the daemon once Slack answers",
          ("tests/supersede/test_demo.py::test_with_slack_unreachable_the_demo_finishes_with_delivery_pending",)),
    Fault("slack", "a Slack request with a bad signature, a tampered body, no signature, or a timestamp 10 minutes old",
          "refused 401 by slack-bolt's request verification before any listener runs",
          "no job, no action recorded",
          ("tests/workers/test_slack_app.py::test_bad_signatures_and_stale_requests_are_refused",)),
    Fault("slack", "a button request retried by Slack (`X-Slack-Retry-Num`) or replayed; Re-run clicked twice",
          "each request is recorded by its `trigger_id` before it acts: a repeat finds its row and "
          "does nothing; a second click finds the first run still queued and says so",
          "one benchmark job sent, one answer, the Slack user on the job",
          ("tests/workers/test_slack_app.py::test_a_rerun_click_makes_one_job_and_the_same_request_again_none",)),
    Fault("slack", "someone not in `notify.slack.operators` clicks a button or runs `/supersede mute`",
          "an ephemeral \"not allowed\" answer; the refusal is recorded with their user id",
          "no job, no mute",
          ("tests/workers/test_slack_app.py::test_someone_not_an_operator_is_refused_and_recorded",
           "tests/workers/test_slack_app.py::test_the_slash_command_answers_status_mute_and_usage")),
    Fault("slack", "Socket Mode: the same envelope delivered twice, or an app token Slack refuses",
          "the repeated request finds its row in the action log and does nothing; a refused app "
          "token stops `supersede run` at start-up with one line naming `SLACK_APP_TOKEN`",
          "one mute, one action row; nothing started with a bad token",
          ("tests/workers/test_slack_socket_mode.py::test_an_operator_mutes_from_a_message_once_even_when_the_envelope_comes_twice",
           "tests/workers/test_slack_socket_mode.py::test_a_refused_app_token_stops_the_start_with_a_clear_message")),
    # ---------------------------------------------------------------- judge
    Fault("judge", "a judge that answers garbage every time (or a tiny local judge)",
          "each unreadable answer is asked once more with a stricter reminder, then counted as a "
          "tie; above `max_failures` of such examples the verdict is INCONCLUSIVE with the reason",
          "the benchmark's answers and every judge answer (cached: a re-run asks nothing)",
          ("tests/benchmarks/test_judged_verdict.py::test_a_judge_answering_garbage_is_inconclusive_with_the_reason",
           "tests/workers/test_judged_pipeline.py::test_a_local_hub_judge_runs_in_the_benchmark_job_and_its_answers_are_kept")),
    Fault("judge", "the judge's endpoint refuses (401) or cannot be reached",
          "the first failed call stops the judging; the verdict is INCONCLUSIVE with the "
          "endpoint's reason, the key never in it",
          "both sides' stored answers; no failed call cached",
          ("tests/benchmarks/test_judge.py::test_a_refusing_endpoint_is_reported_not_raised",
           "tests/benchmarks/test_judge.py::test_an_unreachable_endpoint_is_reported_not_raised",
           "tests/benchmarks/test_judge.py::test_a_failed_call_stops_the_judgement_and_is_not_cached")),
    Fault("judge", "a judge whose verdict flips with the order of the answers",
          "the two orders disagree: a tie; the share of such examples is reported as position "
          "bias, with a warning above 30%",
          "the ties counted, never a win from the order",
          ("tests/benchmarks/test_judged_verdict.py::test_a_judge_that_flips_with_the_order_gives_all_ties_and_says_so",)),
    # ---------------------------------------------------------------- configuration
    Fault("config", "Slack token set, no channel",
          "`supersede run`, `demo` and every worker exit 2 before any work, one line naming "
          "`notify.slack.channel` / `SUPERSEDE_NOTIFY__SLACK__CHANNEL`", "nothing started",
          ("tests/supersede/test_cli.py::test_demo_with_a_slack_token_and_no_channel_stops_before_any_work",
           "tests/supersede/test_cli.py::test_run_with_a_slack_token_and_no_channel_stops_before_any_work",
           "tests/workers/test_preflight.py::test_a_slack_token_without_a_channel_names_the_key_and_its_variable")),
    Fault("config", "a fine-tune's task file missing or broken, a prompt option the task cannot take",
          "`run`, `rerun` and every worker exit 2 with one line naming the fine-tune and the file",
          "the queued message stays in the broker",
          ("tests/workers/test_preflight.py::test_a_worker_with_a_missing_task_file_exits_2_before_consuming",
           "tests/workers/test_preflight.py::test_a_missing_task_file_names_the_fine_tune_and_the_file",
           "tests/workers/test_preflight.py::test_more_shots_than_the_task_has_is_refused_at_start")),
    Fault("config", "`supersede demo` or `example` run from a read-only folder",
          "exit 2 with one line naming the folder and how to choose another (`--workdir` or "
          "`SUPERSEDE_DEMO_WORKDIR` / `SUPERSEDE_EXAMPLE_WORKDIR`)", "nothing started",
          ("tests/supersede/test_front_door.py::test_a_read_only_working_folder_is_one_line_naming_the_way_out",)),
    Fault("config", "a store in a read-only folder",
          "every command and worker exits 2 with one line naming `store.url`", "the store unchanged",
          ("tests/workers/test_preflight.py::test_a_store_in_a_read_only_folder_is_one_line",)),
    # ---------------------------------------------------------------- bad input
    Fault("input", "fuzzed config files and environment values (hypothesis)",
          "loaded, or one `ConfigError` line naming file and key", "-",
          ("tests/config/test_settings.py::test_junk_yaml_either_loads_or_raises_config_error",
           "tests/config/test_settings.py::test_unknown_key_names_file_key_path_and_suggestion")),
    Fault("input", "fuzzed task files (hypothesis), broken templates, bad data",
          "loaded, or one `TaskFileError` naming file and key, before any model loads", "-",
          ("tests/benchmarks/test_tasks.py::test_fuzzed_task_files_load_or_raise_task_file_error",
           "tests/benchmarks/test_tasks.py::test_bug_templates_cannot_reach_python_internals")),
    Fault("input", "webhook: wrong or missing secret, bad JSON, non-Hub payload, huge body, "
          "no length, a length that is no number, fuzzed bodies (hypothesis)",
          "401 / 403 / 400 / 400 / 413 / 411 / 400; never 500", "nothing recorded",
          (f"{W}::test_secret_is_required_and_checked", f"{W}::test_bad_bodies_are_refused",
           f"{W}::test_oversized_body_is_refused_unread",
           f"{W}::test_body_without_a_length_is_refused",
           f"{W}::test_a_length_that_is_not_a_number_is_refused", "tests/faults/test_webhook_fuzz.py")),
    Fault("input", "replayed or concurrent duplicate webhook deliveries", "`200 ignored`",
          "one release",
          (f"{W}::test_repo_created_is_released_once",
           f"{W}::test_concurrent_duplicate_deliveries_release_once")),
    Fault("input", "feed entries with hostile HTML, `<!channel>`, `<@U…>`, duplicate or "
          "missing ids, relative links, non-UTF-8", "deduped, resolved, decoded; text escaped in "
          "Slack and the report", "one event per entry; nothing pings, no link injected",
          (f"{F}::test_vendor_rss_first_pass_classifies_every_entry",
           f"{F}::test_latin1_feed_without_charset_decodes_titles",
           f"{K}::test_untrusted_text_is_escaped",
           "tests/supersede/test_report.py::test_tables_summary_and_escaping")),
    Fault("input", "an API reply that names no choice, or is malformed",
          "counted wrong (and as invalid); malformed replies retried", "every example scored once",
          (f"{A}::test_invalid_answers_count_as_wrong",
           f"{A}::test_persistently_malformed_replies_are_unavailable")),
    Fault("input", "a verdict larger than Slack's limits", "clamped (50 blocks, 3,000 per "
          "section, 150 per header)", "a valid message",
          (f"{K}::test_an_oversized_verdict_is_clamped_and_still_valid",)),
    # ---------------------------------------------------------------- secrets
    Fault("secrets", "Hub, Slack and API tokens and the webhook secret in the environment",
          "redacted from logs (tracebacks included) and error messages; never in the store, "
          "reports or Slack messages", "-",
          ("tests/faults/test_secrets.py",
           "tests/supersede/test_observability.py::test_json_lines_with_secrets_redacted",
           f"{A}::test_wrong_key_is_refused_at_once_and_never_shown",
           f"{ST}::test_a_store_that_cannot_be_opened_is_a_config_error_without_the_password")),
    # ---------------------------------------------------------------- security: what a release can make us do
    Fault("security", "a repo whose listed files add up past the cap (parameter count x stored bytes, or `hub.max_download_gib`)",
          "`DownloadRefused` from the listing's sizes, before any file request; `skipped`",
          "nothing downloaded",
          ("tests/faults/test_downloads.py::test_listing_over_the_cap_is_refused_before_any_download",)),
    Fault("security", "nested folders and extra `*.json`/`*.txt` files, shards the index does not name",
          "only the top-level config, generation config, tokenizer, chat template and indexed shards are requested",
          "nothing else downloaded",
          ("tests/faults/test_downloads.py::test_only_the_top_level_files_a_model_needs_are_requested",
           "tests/faults/test_downloads.py::test_sharded_model_fetches_only_the_shards_its_index_names")),
    Fault("security", "the disk fills up while downloading (`ENOSPC`)",
          "`DiskFull` naming the cache folder: the job fails once with the reason, not retried as Hub unavailable",
          "its verdict jobs end with it, notified",
          ("tests/faults/test_downloads.py::test_full_disk_while_downloading_is_fatal_with_its_reason",
           "tests/faults/test_downloads.py::test_full_disk_ends_the_job_once_instead_of_retrying_as_hub_unavailable")),
    Fault("security", "the Hub cache grows past `hub.cache_max_gib`",
          "least recently used candidate snapshots deleted through huggingface_hub's cache API",
          "the snapshot in use and the fine-tunes' snapshots",
          ("tests/faults/test_downloads.py::test_cache_evicts_the_least_recently_used_candidate_and_keeps_the_one_in_use",)),
    Fault("security", "no parameter count on the Hub",
          "estimated from the listed weight sizes for routing, not sent to the largest queue", "",
          ("tests/faults/test_downloads.py::test_unknown_parameter_count_is_estimated_from_the_weights_for_routing",)),
    Fault("security", "an unpinned remote-code allow-list entry, or a push after the reviewed commit",
          "a bare repo id is a `ConfigError` naming the key and the `org/name@<sha>` form; only the pinned commit runs its code",
          "a later push's code is never downloaded or run",
          ("tests/faults/test_downloads.py::test_unpinned_allow_list_entry_is_a_config_error",
           "tests/faults/test_downloads.py::test_pinned_allow_list_entry_allows_only_that_commit",
           "tests/faults/test_downloads.py::test_local_folder_allow_list_entry_pins_its_content")),
    Fault("security", "`auto_map` naming code in another repo (`other/repo--module.Class`)",
          "`RemoteCodeRefused`, even for an allow-listed commit", "no code or weights downloaded",
          ("tests/faults/test_downloads.py::test_auto_map_naming_another_repo_is_refused_even_when_allowed",)),
    Fault("security", "a safetensors index mapping weights to `../../../<other model>/model.safetensors`",
          "`DownloadRefused`: an index may name only plain top-level files of the listing", "no weights downloaded or read",
          ("tests/faults/test_downloads.py::test_index_pointing_outside_the_repo_is_refused",)),
    Fault("security", "a decoy `adapter_model-unused.safetensors` beside an adapter's pickle weights",
          "an adapter is exactly `adapter_model.safetensors`; any pickle file in its folder is refused", "no pickle loaded",
          ("tests/faults/test_downloads.py::test_decoy_safetensors_beside_pickle_adapter_is_refused",
           "tests/faults/test_downloads.py::test_adapter_with_pickle_beside_its_safetensors_is_refused")),
    Fault("security", "a chat template that never ends (three nested `range(100000)` loops)",
          "each model's run is a child process killed at `workers.soft_time_limit`, in every pool "
          "(the embedded solo pool too); the job `failed` with the limit named, the lease released",
          "the worker and daemon run on and take the next job",
          ("tests/faults/test_limits.py::test_an_endless_chat_template_is_killed_and_the_worker_takes_the_next_job",)),
    Fault("security", "a chat template rendering 300 MB (`{{'A'*300000000}}`)",
          "refused past `workers.max_prompt_chars` (or 32 characters per token of the model's "
          "context): `skipped` with the length and the limit", "-",
          ("tests/faults/test_limits.py::test_a_chat_template_rendering_300_mb_is_refused",)),
    Fault("security", "a model's run allocating past the memory limit",
          "its child process's address space is capped (`RLIMIT_AS`; resident memory watched on "
          "CUDA): `failed`, \"ran out of its N GiB memory limit\"", "the worker's own process",
          ("tests/faults/test_limits.py::test_a_run_past_the_memory_limit_fails_with_the_reason",)),
    # ---------------------------------------------------------------- security: what may enter
    Fault("security", "a webhook delivery or a feed post naming a repo of an author not watched",
          "skipped and logged with the reason (`author X is not in watch.hub.authors` or "
          "`... watch.feeds[name].accept_from`); a feed post's repo is not even looked up",
          "no download, no job, no GPU time",
          ("tests/faults/test_intake.py::test_webhook_delivery_for_an_author_not_watched",
           "tests/faults/test_intake.py::test_feed_post_linking_a_repo_of_an_author_not_accepted",
           "tests/watcher/test_filters.py::test_only_accepted_authors_pass_before_any_other_rule")),
    Fault("security", "a feed redirecting to loopback, link-local (cloud metadata) or private "
          "addresses", "refused before it is followed (host names resolved); the feed's error "
          "names the hop and why; same-origin and public redirects are still followed",
          "the inner host is never asked",
          ("tests/faults/test_intake.py::test_feed_redirect_to_a_non_public_address_is_refused",
           "tests/faults/test_intake.py::test_ordinary_redirects_are_still_followed")),
    Fault("security", "200 half-open connections to the webhook endpoint (half a header, never "
          "finished)", "one event loop under uvicorn, no thread per connection: a request must "
          "arrive whole within `watch.webhook.request_timeout_s` or its connection is closed; at "
          "most `watch.webhook.max_connections` open",
          "a valid delivery answered at once; connections and threads back to idle",
          ("tests/faults/test_webhook_server.py::test_half_open_connections_do_not_starve_a_delivery",
           "tests/faults/test_webhook_server.py::test_connections_over_the_cap_are_closed_as_they_arrive")),
    Fault("security", "a webhook delivery announcing a large body behind a wrong or missing secret",
          "401 / 403 at once: the secret is checked before the body is read; the connection is "
          "closed", "nothing read, nothing recorded",
          ("tests/faults/test_webhook_server.py::test_a_large_body_behind_a_wrong_secret_is_not_read",)),
    Fault("security", "`Content-Length: ²` and other non-ASCII digits on the webhook endpoint",
          "400 with a JSON reason (ASCII digits only); errors logged through the redacting "
          "handlers, never a traceback; the server goes on", "nothing recorded",
          ("tests/faults/test_webhook_server.py::test_a_length_in_other_digits_is_refused_and_the_server_goes_on",)),
    Fault("security", "a release on the broker or in the store naming its own endpoint (a URL of "
          "the sender's, `HF_TOKEN` as the key variable), or a rule not configured",
          "releases name a configured rule (a feed's `api_models` rule or an `api_candidates` "
          "entry); the worker reads endpoint, key variable and prices from its own configuration; "
          "anything else is `skipped` with `refused: ...` (shown by `supersede status`)",
          "no request to the named URL; the token nowhere; earlier versions' events read and refused",
          ("tests/faults/test_event_rules.py::test_a_forged_release_never_sends_a_token_to_the_url_it_names",
           "tests/faults/test_event_rules.py::test_a_release_naming_an_unknown_rule_is_refused_and_recorded",
           "tests/faults/test_event_rules.py::test_a_configured_rule_benchmarks_with_the_workers_own_key")),
    Fault("security", "terminal escape codes and control characters in feed, Hub or webhook text "
          "(`\\x1b[2J`, `\\x1b]0;...\\x07`, C1, NUL)",
          "removed when an event is built or read back (line breaks become spaces); other "
          "Unicode kept", "the post, announced as plain text",
          ("tests/faults/test_event_rules.py::test_feed_text_reaches_the_terminal_and_logs_without_control_characters",)),
    # ---------------------------------------------------------------- security: deployment
    Fault("security", "docker-compose: Flower on every interface without a login, Redis without a "
          "password, PostgreSQL trusting every connection",
          "Flower on the host's loopback behind basic auth; Redis `requirepass` and a PostgreSQL "
          "password, each from a required variable (`docker compose up` stops naming it) and in "
          "every broker and store URL", "-",
          ("tests/faults/test_deployment.py::test_compose_stops_when_a_required_secret_is_unset",
           "tests/faults/test_deployment.py::test_flower_is_on_loopback_behind_basic_auth",
           "tests/faults/test_deployment.py::test_redis_requires_a_password_every_broker_url_carries",
           "tests/faults/test_deployment.py::test_postgres_needs_a_password_every_store_url_carries")),
    Fault("security", "store and broker passwords in what a worker reports (Celery's remote "
          "`conf` and `report`, shown by Flower) or in printed and logged settings",
          "the settings are not a Celery configuration entry, and their URLs show passwords as "
          "`***` in every repr and str", "a worker answering with no password",
          ("tests/faults/test_deployment.py::test_a_worker_reports_its_configuration_without_passwords",
           "tests/faults/test_deployment.py::test_printed_settings_hide_url_passwords")),
    Fault("security", "containers running as root, every service given every secret",
          "an unprivileged image user (the Hub cache in its home); each service only the secrets "
          "it uses (GPU workers: no Slack token, no webhook secret)", "-",
          ("tests/faults/test_deployment.py::test_the_image_runs_as_an_unprivileged_user",
           "tests/faults/test_deployment.py::test_each_service_gets_only_the_secrets_it_uses")),
)  # fmt: skip


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """The README's reliability table."""
    lines = ["| kind | fault | what Supersede does | what is kept |", "|---|---|---|---|"]
    for fault in FAULTS:
        cells = (fault.group, fault.fault, fault.behaviour, fault.kept)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
