"""Saved scripts: saved (approved, audited), versioned, listed, run by name with checked
arguments, refused when changed after saving, and callable from other scripts."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from clambot_tools import (
    Approval,
    ApprovalRequest,
    AuditLog,
    Limits,
    Policy,
    Sandbox,
    SavedScript,
    ScriptArgumentsError,
    ScriptError,
    ScriptLibrary,
    binding,
)
from clambot_tools.scripts import DirectoryStore, SQLiteStore, draft, saved_script_tools

WRITES = Policy(auto_approve=("write",))
MONTH_SCHEMA = {
    "type": "object",
    "properties": {"month": {"type": "string", "description": "YYYY-MM"}},
    "required": ["month"],
}
REVENUE = """\
const rows = await tools.orders({month: args.month});
const byRegion = {};
for (const r of rows) byRegion[r.region] = (byRegion[r.region] || 0) + r.eur;
({month: args.month, total: rows.reduce((a, r) => a + r.eur, 0), byRegion})
"""

calls: list[dict[str, Any]] = []


@binding(description="Orders of one month")
def orders(month: str) -> list[dict[str, Any]]:
    calls.append({"orders": month})
    return [
        {"region": "north", "eur": 10},
        {"region": "south", "eur": 32},
        {"region": "north", "eur": 5},
    ]


@binding(effects=("write",), description="Issue a refund")
def refund(order_id: str) -> dict[str, Any]:
    calls.append({"refund": order_id})
    return {"refunded": order_id}


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    calls.clear()


@pytest.fixture(params=["directory", "sqlite"])
def library(request: pytest.FixtureRequest, tmp_path: Path) -> ScriptLibrary:
    if request.param == "directory":
        return ScriptLibrary(tmp_path / "scripts")
    return ScriptLibrary.sqlite(tmp_path / "scripts.db")


def _save(sb: Sandbox, source: str = REVENUE, **kw: Any) -> SavedScript:
    kw.setdefault("description", "Revenue of one month, by region")
    kw.setdefault("args_schema", MONTH_SCHEMA)
    kw.setdefault("bindings", ["orders"])
    return sb.save_script("monthly_revenue", source, **kw)


def test_save_version_and_list(library: ScriptLibrary) -> None:
    sb = Sandbox(bindings=[orders], scripts=library, policy=WRITES)
    v1 = _save(sb)
    assert (v1.name, v1.number, v1.ref) == ("monthly_revenue", 1, "monthly_revenue@1")
    assert len(v1.version) == 64 and v1.intact()
    # the same content again is the same version: nothing new is stored
    assert _save(sb) == v1
    assert [s.number for s in library.versions("monthly_revenue")] == [1]
    # a change (of the source, the schema, the bindings or the description) is a new version
    v2 = _save(sb, REVENUE.replace("eur, 0)", "eur, 0) * 1"))
    v3 = _save(sb, description="Revenue of one month (EUR)")
    assert (v2.number, v3.number) == (2, 3)
    assert len({v1.version, v2.version, v3.version}) == 3
    sb.save_script("hello", "'hi ' + args.who", description="Greets", args_schema=None)
    assert library.names() == ["hello", "monthly_revenue"]
    assert [s.ref for s in library.latest()] == ["hello@1", "monthly_revenue@3"]
    assert library.get("monthly_revenue", 1) == v1
    assert library.get("monthly_revenue", "2") == v2
    assert library.get("monthly_revenue", v2.version[:10]) == v2
    assert library.get("monthly_revenue@1") == v1
    assert library.get("monthly_revenue").source == REVENUE
    with pytest.raises(ScriptError, match="no version 9"):
        library.get("monthly_revenue", 9)
    with pytest.raises(ScriptError, match="no saved script is named 'nope'; saved: hello"):
        library.get("nope")


def test_run_by_name_gives_args_and_calls_its_tools(library: ScriptLibrary) -> None:
    sb = Sandbox(bindings=[orders], scripts=library, policy=WRITES)
    _save(sb)
    res = sb.run_saved("monthly_revenue", {"month": "2024-03"})
    assert res.ok, res.error
    assert res.value == {"month": "2024-03", "total": 47, "byRegion": {"north": 15, "south": 32}}
    assert calls == [{"orders": "2024-03"}]
    assert asyncio.run(sb.arun_saved("monthly_revenue", {"month": "2024-04"})).value["month"] == (
        "2024-04"
    )
    # an older version by number
    _save(sb, "({month: args.month, v: 2})")
    assert sb.run_saved("monthly_revenue", {"month": "x"}).value == {"month": "x", "v": 2}
    assert sb.run_saved("monthly_revenue", {"month": "x"}, version=1).value["total"] == 47


def test_bad_arguments_are_refused_before_the_run_naming_the_field(
    library: ScriptLibrary,
) -> None:
    records: list[dict[str, Any]] = []
    sb = Sandbox(bindings=[orders], scripts=library, policy=WRITES, audit=AuditLog(records.append))
    _save(sb)
    records.clear()
    with pytest.raises(ScriptArgumentsError) as err:
        sb.run_saved("monthly_revenue", {"month": 202403, "day": 1})
    assert str(err.value) == (
        "invalid arguments for script monthly_revenue: month: must be string, not a number; "
        "day: Extra inputs are not permitted"
    )
    assert err.value.problems == (
        "month: must be string, not a number",
        "day: Extra inputs are not permitted",
    )
    with pytest.raises(ScriptArgumentsError, match="month: Field required"):
        sb.run_saved("monthly_revenue")
    with pytest.raises(ScriptArgumentsError, match="one object of named arguments"):
        sb.run_saved("monthly_revenue", ["2024-03"])  # type: ignore[arg-type]
    with pytest.raises(ScriptArgumentsError, match="cannot hold exactly"):
        sb.run_saved("monthly_revenue", {"month": 2**60 + 1})
    assert calls == [] and records == []  # nothing ran


def test_a_saved_script_calls_only_its_declared_tools_under_the_policy(
    library: ScriptLibrary,
) -> None:
    answers: list[ApprovalRequest] = []

    def approve(req: ApprovalRequest) -> Approval:
        answers.append(req)
        return Approval.ALLOW_ONCE if req.args.get("order_id") != "B" else Approval.DENY

    sb = Sandbox(bindings=[orders, refund], scripts=library, policy=Policy(approve=approve))
    sb.save_script(
        "sneaky",
        "await tools.refund({order_id: 'A'})",
        description="declares orders but calls refund",
        bindings=["orders"],
    )
    sb.save_script(
        "refunder",
        "const out = [];\nfor (const id of args.ids) {\n"
        "  try { out.push(await tools.refund({order_id: id})) }\n"
        "  catch (e) { out.push(e.message) }\n}\nout",
        description="refunds orders",
        args_schema={"type": "object", "properties": {"ids": {"type": "array"}}},
        bindings=["refund"],
    )
    answers.clear()
    res = sb.run_saved("sneaky")
    assert res.error is not None and res.error.kind == "binding_denied"
    assert "not allowed by the policy" in res.error.message
    assert calls == []
    res = sb.run_saved("refunder", {"ids": ["A", "B"]})
    assert res.value == [{"refunded": "A"}, "tools.refund was not approved"]
    assert calls == [{"refund": "A"}]
    script = sb.scripts.get("refunder") if sb.scripts else None
    assert script is not None
    # the approver sees which saved script asks (its code hash)
    assert {r.code_sha256 for r in answers} == {script.code_sha256}
    # a policy that denies writes denies the script's writes
    strict = Sandbox(
        bindings=[orders, refund], scripts=library, policy=Policy(deny_effects=["write"])
    )
    assert strict.run_saved("refunder", {"ids": ["C"]}).value == [
        "tools.refund has effect 'write', which the policy denies"
    ]
    # a script needing tools this Sandbox does not grant is refused before it runs
    with pytest.raises(ScriptError, match="does not grant: refund"):
        Sandbox(bindings=[orders], scripts=library).run_saved("refunder", {"ids": []})


def test_saving_is_a_write_approved_and_audited(library: ScriptLibrary) -> None:
    records: list[dict[str, Any]] = []
    asked: list[ApprovalRequest] = []
    answer = {"value": Approval.DENY}

    def approve(req: ApprovalRequest) -> Approval:
        asked.append(req)
        return answer["value"]

    audit = AuditLog(records.append)
    # no approver: refused, as a write binding is
    plain = Sandbox(bindings=[orders], scripts=library, audit=audit)
    with pytest.raises(ScriptError, match="no approver is set"):
        _save(plain)
    # the approver says no, then yes
    sb = Sandbox(bindings=[orders], scripts=library, policy=Policy(approve=approve), audit=audit)
    with pytest.raises(ScriptError, match="saving script monthly_revenue was not approved"):
        _save(sb)
    assert library.names() == []
    answer["value"] = Approval.ALLOW_ONCE
    saved = _save(sb)
    req = asked[-1]
    assert req.binding == "save_script" and req.effects == ("write",)
    assert req.args["source"] == REVENUE and req.args["number"] == 1
    assert req.args["bindings"] == ["orders"] and req.args["args_schema"] == MONTH_SCHEMA
    assert req.code_sha256 == saved.code_sha256 and len(req.request_id) == 32
    assert asked[0].request_id == req.request_id  # the same save asks with the same id
    # the policy denying writes refuses saving outright
    with pytest.raises(ScriptError, match="denies the effect 'write'"):
        Sandbox(scripts=library, policy=Policy(deny_effects=["write"])).save_script(
            "other", "1", description="one"
        )

    # a failing approver denies
    def broken(req: ApprovalRequest) -> Approval:
        raise RuntimeError("the approval service is down")

    with pytest.raises(ScriptError, match="could not be obtained"):
        Sandbox(scripts=library, policy=Policy(approve=broken)).save_script(
            "other", "1", description="one"
        )
    saves = [r for r in records if r["event"] == "script_save"]
    assert [(r["decision"], r["outcome"]) for r in saves] == [
        ("denied", "denied"),
        ("approval_denied", "denied"),
        ("approved", "saved"),
    ]
    assert saves[-1]["script"] == "monthly_revenue" and saves[-1]["script_number"] == 1
    assert saves[-1]["script_version"] == saved.version
    assert all("source" not in r for r in records)  # the audit log never holds code


def test_async_approvers_and_asave(library: ScriptLibrary) -> None:
    async def approve(req: ApprovalRequest) -> Approval:
        await asyncio.sleep(0)
        return Approval.ALLOW_ONCE

    sb = Sandbox(bindings=[orders], scripts=library, policy=Policy(approve=approve))
    saved = _save(sb)  # an async approver from sync code runs on the package's loop
    assert saved.number == 1
    again = asyncio.run(
        sb.asave_script("hello", "'hi'", description="Greets", args_schema=None, bindings=[])
    )
    assert again.ref == "hello@1"


def test_invalid_scripts_are_not_saved(library: ScriptLibrary) -> None:
    sb = Sandbox(bindings=[orders], scripts=library, policy=WRITES)
    with pytest.raises(ScriptError, match=r"SyntaxError: .* \(line 2, column 11\)"):
        sb.save_script("broken", "const a = 1;\nconst b = ;", description="does not parse")
    with pytest.raises(ScriptError, match="cannot name a saved script"):
        sb.save_script("../etc", "1", description="x")
    with pytest.raises(ScriptError, match="a description is required"):
        sb.save_script("nodesc", "1", description=" ")
    with pytest.raises(ScriptError, match="must describe an object"):
        sb.save_script("arr", "1", description="x", args_schema={"type": "array"})
    with pytest.raises(ScriptError, match="does not grant: nope"):
        sb.save_script("needs", "1", description="x", bindings=["nope"])
    assert library.names() == []


def test_a_version_changed_on_disk_is_refused(tmp_path: Path) -> None:
    library = ScriptLibrary(tmp_path)
    sb = Sandbox(bindings=[orders], scripts=library, policy=WRITES)
    _save(sb)
    path = tmp_path / "monthly_revenue" / "v1.js"
    text = path.read_text()
    assert text.startswith("/* clambot saved script") and text.endswith(REVENUE)
    path.write_text(text.replace("r.eur, 0)", "r.eur, 0) + 1000"))
    with pytest.raises(ScriptError, match="was changed after it was saved"):
        sb.run_saved("monthly_revenue", {"month": "2024-03"})
    with pytest.raises(ScriptError, match="was changed after it was saved"):
        library.latest()
    # a renamed file is refused too (its number is part of what was saved)
    path.write_text(text)
    path.rename(tmp_path / "monthly_revenue" / "v2.js")
    with pytest.raises(ScriptError, match="monthly_revenue@2 was changed"):
        library.get("monthly_revenue")
    assert calls == []


def test_a_changed_script_under_an_existing_version_is_refused(library: ScriptLibrary) -> None:
    sb = Sandbox(bindings=[orders], scripts=library, policy=WRITES)
    v1 = _save(sb)
    changed = draft("monthly_revenue", "1 + 1", description="other", bindings=[])
    import dataclasses

    with pytest.raises(ScriptError, match="version 1 of script monthly_revenue exists"):
        library.store.add(dataclasses.replace(changed, number=1))
    # the same content under its own number is fine (nothing new)
    assert library.store.add(dataclasses.replace(changed, number=0)).number == 2
    assert library.store.add(dataclasses.replace(v1, number=1, saved_at="")) == v1


def test_sqlite_refuses_updates_and_checks_rows(tmp_path: Path) -> None:
    library = ScriptLibrary.sqlite(tmp_path / "s.db")
    sb = Sandbox(bindings=[orders], scripts=library, policy=WRITES)
    _save(sb)
    db = sqlite3.connect(tmp_path / "s.db")
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        db.execute("UPDATE clambot_scripts SET source = '1'")
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        db.execute("DELETE FROM clambot_scripts")
    db.execute("DROP TRIGGER clambot_scripts_immutable")
    db.execute("UPDATE clambot_scripts SET source = source || ' + 1'")
    db.commit()
    db.close()
    with pytest.raises(ScriptError, match="was changed after it was saved"):
        sb.run_saved("monthly_revenue", {"month": "2024-03"})


def test_concurrent_saves_get_distinct_versions(tmp_path: Path) -> None:
    for library in (ScriptLibrary(tmp_path / "d"), ScriptLibrary.sqlite(tmp_path / "s.db")):
        sb = Sandbox(scripts=library, policy=WRITES)
        errors: list[BaseException] = []

        def save(i: int, sb: Sandbox = sb, errors: list[BaseException] = errors) -> None:
            try:
                sb.save_script("counter", f"{i}", description=f"returns {i}")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=save, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        versions = library.versions("counter")
        assert sorted(s.number for s in versions) == list(range(1, 9))
        assert sorted(s.source for s in versions) == [str(i) for i in range(8)]


def test_saved_scripts_as_tools_of_other_scripts(library: ScriptLibrary) -> None:
    records: list[dict[str, Any]] = []
    saver = Sandbox(bindings=[orders], scripts=library, policy=WRITES)
    _save(saver)
    sb = Sandbox(
        bindings=[orders],
        scripts=library,
        script_tools=["monthly_revenue"],
        audit=AuditLog(records.append),
    )
    assert "  monthly_revenue(args: {\n    month: string; // YYYY-MM\n  })" in sb.describe_tools()
    # the calling script tampers with its own realm: the saved script runs in its own
    res = sb.run(
        "Array.prototype.reduce = () => 999;\nObject.prototype.north = 1e6;\n"
        "const [a, b] = await Promise.all([\n"
        "  tools.monthly_revenue({month: '2024-01'}),\n"
        "  tools.monthly_revenue({month: '2024-02'}),\n"
        "]);\n"
        "delete Object.prototype.north;\n[a.total, a.byRegion.north, b.month, [1].reduce()]"
    )
    assert res.ok, res.error
    assert res.value == [47, 15, "2024-02", 999]
    nested = [r for r in records if r["event"] == "run" and r.get("script_depth") == 1]
    assert len(nested) == 2 and nested[0]["script"] == "monthly_revenue"
    # invalid arguments reject with a TypeError naming the field
    res = sb.run("await tools.monthly_revenue({month: 3})")
    assert res.error is not None and res.error.kind == "binding_failed"
    assert "month: must be string, not a number" in res.error.message


def test_a_saved_script_tool_that_writes_needs_approval(library: ScriptLibrary) -> None:
    saver = Sandbox(bindings=[refund], scripts=library, policy=WRITES)
    saver.save_script(
        "refund_one",
        "await tools.refund({order_id: args.id})",
        description="Refund one order",
        args_schema={"type": "object", "properties": {"id": {"type": "string"}}},
        bindings=["refund"],
    )
    asked: list[str] = []

    def approve(req: ApprovalRequest) -> Approval:
        asked.append(req.binding)
        return Approval.ALLOW_ONCE

    sb = Sandbox(
        bindings=[refund],
        scripts=library,
        script_tools=["refund_one"],
        policy=Policy(approve=approve),
    )
    assert "/** Refund one order (needs approval) */" in sb.describe_tools()
    assert sb.run("await tools.refund_one({id: 'A'})").value == {"refunded": "A"}
    # the call of the saved script, then its own write, each asked
    assert asked == ["refund_one", "refund"]
    denied = Sandbox(
        bindings=[refund],
        scripts=library,
        script_tools=["refund_one"],
        policy=Policy(deny_effects=["write"]),
    )
    assert "refund_one" not in denied.describe_tools()


def test_saved_script_calls_nest_at_most_three_deep_and_keep_the_deadline(
    library: ScriptLibrary,
) -> None:
    saver = Sandbox(scripts=library, policy=WRITES)
    saver.save_script(
        "recurse",
        "args.n === 0 ? 0 : 1 + await tools.recurse({n: args.n - 1})",
        description="calls itself",
        args_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
        bindings=["recurse"],
    )
    saver.save_script("spin", "for (;;) {}", description="never ends")
    sb = Sandbox(scripts=library, script_tools=["recurse", "spin"], limits=Limits(timeout_s=1.5))
    assert sb.run("await tools.recurse({n: 2})").value == 2  # three saved scripts deep
    res = sb.run("await tools.recurse({n: 3})")
    assert res.error is not None
    assert "at most 3 levels deep" in res.error.message
    # a nested run ends by its caller's deadline, and so does the caller: either the
    # caller's own time runs out first, or it catches the nested run's timeout
    res = sb.run("try { await tools.spin({}) } catch (e) { e.message }")
    if res.error is not None:
        assert res.error.kind == "timeout"
    else:
        assert res.value.startswith("saved script spin failed (timeout)")
    assert res.stats.duration_ms < 1500 + 1000


def test_saved_script_tools_for_an_mcp_server(library: ScriptLibrary) -> None:
    sb = Sandbox(bindings=[orders], scripts=library, policy=WRITES)
    _save(sb)
    sb.save_script(
        "hello",
        "'hi ' + args.who",
        description="Greets",
        args_schema={"type": "object", "properties": {"who": {"type": "string"}}},
    )
    tools = saved_script_tools(sb)
    assert [(t.name, t.description) for t in tools] == [
        ("hello", "Greets"),
        ("monthly_revenue", "Revenue of one month, by region"),
    ]
    assert tools[1].input_schema == MONTH_SCHEMA
    assert tools[0].call({"who": "Ada"}).value == "hi Ada"
    assert asyncio.run(tools[1].acall({"month": "m"})).value["total"] == 47
    with pytest.raises(ScriptArgumentsError, match="who: must be string"):
        tools[0].call({"who": 1})
    assert [t.name for t in saved_script_tools(sb, ["hello"])] == ["hello"]


def test_stores_share_one_interface(tmp_path: Path) -> None:
    from clambot_tools.scripts import ScriptStore

    for store in (DirectoryStore(tmp_path / "d"), SQLiteStore(tmp_path / "s.db")):
        assert isinstance(store, ScriptStore)
        assert store.names() == [] and store.versions("x") == []
