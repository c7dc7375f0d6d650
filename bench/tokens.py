#!/usr/bin/env python3
"""What code mode costs the model in tokens: the `run_js_sandboxed` tool vs the tools
it stands for, on a realistic set of LangChain tools, in o200k_base tokens.

Figures (targets from issue 12):

* definition ratio: the whole ``run_js_sandboxed`` tool as the model receives it
  (``convert_to_openai_tool``: name, description, input schema) over the same tools'
  own definitions (``convert_to_openai_tool`` of each, summed): target <= 1.0x;
* declaration ratio: ``describe_tools()`` alone over the same sum: target <= 0.75x.

The tool set below is written as a LangChain user writes tools: ``@tool`` functions
with Google-style docstrings (``parse_docstring=True``) or pydantic ``args_schema``
models with ``Field`` descriptions, ``Literal`` enums, optional filters, and typed
results (``typing.TypedDict``, pydantic models, lists of them).

The tokenizer is o200k_base from the npm package ``gpt-tokenizer`` (its ranks are
bundled), installed by ``make bench`` into ``bench/.node``; nothing is downloaded
at run time. To compare with another commit in the same run (by default the main of
when this script was written), the script exports that commit's packages with
``git archive`` into a temporary folder and measures them in a child process, with
this tree's compiled guest.

Usage (from the repository root)::

    make bench                                # installs the tokenizer, runs everything
    .venv/bin/python bench/tokens.py [--baseline REF] [--no-baseline]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import typing
from pathlib import Path
from typing import Literal

import typing_extensions
from langchain_core.tools import tool
from pydantic import BaseModel, Field

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NODE_DIR = HERE / ".node"
#: main when the declaration work started (the figures issue 12 was filed with)
DEFAULT_BASELINE = "03bc965"

# ---------------------------------------------------------------- the tool set


# Twelve support-desk and shop tools, typed the way LangChain users type them. Their
# results are TypedDicts from `typing` (what most write) or, with BENCH_TYPED_DICT set to
# "typing_extensions", from typing_extensions (which pydantic reads on any Python).
TypedDict: typing.Any = (
    typing_extensions.TypedDict
    if os.environ.get("BENCH_TYPED_DICT") == "typing_extensions"
    else typing.TypedDict
)

Status = Literal["open", "pending", "solved", "closed"]
Priority = Literal["low", "normal", "high", "urgent"]
Carrier = Literal["dhl", "ups", "fedex"]


class TicketSummary(TypedDict):
    id: str
    subject: str
    status: Status
    priority: Priority
    customer_id: str
    assignee: str | None
    created_at: str
    updated_at: str


class Message(TypedDict):
    author: str
    body: str
    sent_at: str
    internal: bool


class TicketDetail(TypedDict):
    ticket: TicketSummary
    messages: list[Message]
    tags: list[str]


class Customer(BaseModel):
    id: str
    name: str
    email: str
    tier: Literal["free", "pro", "enterprise"]
    lifetime_value_eur: float
    country: str


class OrderLine(TypedDict):
    sku: str
    name: str
    quantity: int
    unit_price_eur: float


class Order(TypedDict):
    id: str
    customer_id: str
    status: Literal["placed", "paid", "shipped", "delivered", "returned"]
    placed_at: str
    total_eur: float
    lines: list[OrderLine]


class OrderSummary(TypedDict):
    id: str
    placed_at: str
    status: Literal["placed", "paid", "shipped", "delivered", "returned"]
    total_eur: float


class Refund(TypedDict):
    refund_id: str
    order_id: str
    amount_eur: float
    status: Literal["pending", "done", "rejected"]


class StockLevel(TypedDict):
    sku: str
    warehouse: str
    available: int
    reserved: int


class Shipment(TypedDict):
    shipment_id: str
    carrier: Carrier
    tracking_url: str
    eta: str


class EmailReceipt(TypedDict):
    message_id: str
    queued: bool


@tool(parse_docstring=True)
def search_tickets(
    query: str,
    status: Status | None = None,
    priority: Priority | None = None,
    limit: int = 20,
) -> list[TicketSummary]:
    """Search support tickets by text, newest first.

    Args:
        query: Words to look for in the subject and messages.
        status: Only tickets with this status.
        priority: Only tickets with this priority.
        limit: Most tickets to return.
    """
    return []


@tool(parse_docstring=True)
def get_ticket(ticket_id: str) -> TicketDetail:
    """Get a ticket with its whole conversation.

    Args:
        ticket_id: The ticket's id, e.g. "T-1042".
    """
    raise NotImplementedError


class UpdateTicketInput(BaseModel):
    ticket_id: str = Field(description="The ticket's id.")
    status: Status | None = Field(default=None, description="New status.")
    priority: Priority | None = Field(default=None, description="New priority.")
    assignee: str | None = Field(default=None, description="Agent email to assign to.")


@tool(args_schema=UpdateTicketInput)
def update_ticket(
    ticket_id: str,
    status: Status | None = None,
    priority: Priority | None = None,
    assignee: str | None = None,
) -> TicketSummary:
    """Change a ticket's status, priority or assignee."""
    raise NotImplementedError


@tool(parse_docstring=True)
def list_agent_tickets(agent_email: str, status: Status | None = None) -> list[TicketSummary]:
    """List the tickets assigned to an agent.

    Args:
        agent_email: The agent's email address.
        status: Only tickets with this status.
    """
    return []


@tool(parse_docstring=True)
def get_customer(customer_id: str) -> Customer:
    """Get a customer's profile.

    Args:
        customer_id: The customer's id, e.g. "C-77".
    """
    raise NotImplementedError


class FindCustomersInput(BaseModel):
    email: str | None = Field(default=None, description="Exact email address.")
    name: str | None = Field(default=None, description="Part of the name.")
    country: str | None = Field(default=None, description="ISO country code, e.g. DE.")


@tool(args_schema=FindCustomersInput)
def find_customers(
    email: str | None = None, name: str | None = None, country: str | None = None
) -> list[Customer]:
    """Find customers by email, name or country."""
    return []


@tool(parse_docstring=True)
def get_order(order_id: str) -> Order:
    """Get an order with its lines.

    Args:
        order_id: The order's id, e.g. "O-5521".
    """
    raise NotImplementedError


@tool(parse_docstring=True)
def list_orders(customer_id: str, since: str | None = None, limit: int = 50) -> list[OrderSummary]:
    """List a customer's orders, newest first.

    Args:
        customer_id: The customer's id.
        since: Only orders placed on or after this date (YYYY-MM-DD).
        limit: Most orders to return.
    """
    return []


class RefundInput(BaseModel):
    order_id: str = Field(description="The order to refund.")
    amount_eur: float = Field(description="Amount to refund, in euros.", gt=0)
    reason: str = Field(description="Why, in a sentence, for the customer.")


@tool(args_schema=RefundInput)
def refund_order(order_id: str, amount_eur: float, reason: str) -> Refund:
    """Refund part or all of an order to the customer's payment method."""
    raise NotImplementedError


@tool(parse_docstring=True)
def check_stock(
    sku: str, warehouse: Literal["berlin", "lyon", "leeds"] | None = None
) -> list[StockLevel]:
    """Check how many units of a product are in stock.

    Args:
        sku: The product's SKU.
        warehouse: Only this warehouse.
    """
    return []


@tool(parse_docstring=True)
def create_shipment(order_id: str, carrier: Carrier, express: bool = False) -> Shipment:
    """Book a shipment for a paid order.

    Args:
        order_id: The order to ship.
        carrier: Which carrier picks it up.
        express: Next-day delivery (costs more).
    """
    raise NotImplementedError


@tool(parse_docstring=True)
def send_email(to: str, subject: str, body: str, cc: list[str] | None = None) -> EmailReceipt:
    """Send an email to a customer from the support address.

    Args:
        to: The recipient's email address.
        subject: The subject line.
        body: The message, plain text.
        cc: More recipients.
    """
    raise NotImplementedError


TOOLS = [
    search_tickets,
    get_ticket,
    update_ticket,
    list_agent_tickets,
    get_customer,
    find_customers,
    get_order,
    list_orders,
    refund_order,
    check_stock,
    create_shipment,
    send_email,
]


def build_tools() -> list[typing.Any]:
    """The tool set."""
    return list(TOOLS)


WRITES = ("update_ticket", "refund_order", "create_shipment", "send_email")

# ---------------------------------------------------------------- measuring


def texts() -> dict[str, typing.Any]:
    """What the model reads, from the packages importable here: each tool's own
    definition, the sandbox tool's definition, and the declaration alone."""
    from langchain_clambot import SandboxedJSTool
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from clambot_tools import Policy

    tools = build_tools()
    js = SandboxedJSTool(
        tools=tools,
        effects={name: ["write"] for name in WRITES},
        policy=Policy(approve=lambda request: True),
    )
    return {
        "direct": [json.dumps(convert_to_openai_tool(t)) for t in tools],
        "definition": json.dumps(convert_to_openai_tool(js)),
        "declaration": js.describe_tools(),
        "description": js.description,
        "tools": len(tools),
        # a result the declaration does not know is declared `unknown`
        "typed": len(tools) - js.describe_tools().count("Promise<unknown>"),
    }


def count_tokens(strings: list[str]) -> list[int]:
    """o200k_base token counts, by gpt-tokenizer under node.

    Raises SystemExit when the tokenizer is not installed (run ``make bench``)."""
    if not (NODE_DIR / "node_modules" / "gpt-tokenizer").is_dir():
        raise SystemExit(
            "the tokenizer is missing: run `make bench`, or "
            "`npm install --prefix bench/.node gpt-tokenizer@4.0.0`"
        )
    script = (
        'const {countTokens} = require("gpt-tokenizer/encoding/o200k_base");'
        'let s = ""; process.stdin.on("data", d => s += d);'
        'process.stdin.on("end", () => process.stdout.write('
        "JSON.stringify(JSON.parse(s).map(t => countTokens(t)))));"
    )
    out = subprocess.run(
        ["node", "-e", script],
        input=json.dumps(strings),
        capture_output=True,
        text=True,
        check=True,
        cwd=NODE_DIR,
        env={**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")},
    )
    counts: list[int] = json.loads(out.stdout)
    return counts


def child_texts(ref: str | None, typed_dict: str) -> dict[str, typing.Any]:
    """`texts()` in a child process, with the results' TypedDicts from `typed_dict`
    ("typing" or "typing_extensions"), as commit `ref` computes them (its packages, this
    tree's compiled guest), or as this tree does when `ref` is None."""
    import clambot_tools

    guest = Path(clambot_tools.__file__).parent
    with tempfile.TemporaryDirectory(prefix="clambot-tokens-") as tmp:
        env = {**os.environ, "BENCH_TYPED_DICT": typed_dict}
        if ref is not None:
            archive = subprocess.run(
                [
                    "git",
                    "archive",
                    ref,
                    "clambot_tools",
                    "integrations/langchain/langchain_clambot",
                ],
                cwd=ROOT,
                capture_output=True,
                check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            for name in ("_guest.wasm", "_guest.wasm.stamp"):
                shutil.copy(guest / name, Path(tmp) / "clambot_tools" / name)
            env["PYTHONPATH"] = os.pathsep.join(
                [tmp, str(Path(tmp) / "integrations" / "langchain")]
            )
        out = subprocess.run(
            [sys.executable, __file__, "--texts"],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
        )
    if out.returncode != 0:
        raise SystemExit(f"measuring {ref or 'this tree'} failed:\n{out.stderr}")
    result: dict[str, typing.Any] = json.loads(out.stdout)
    return result


def figures(t: dict[str, typing.Any]) -> dict[str, float]:
    counts = count_tokens([*t["direct"], t["definition"], t["declaration"], t["description"]])
    n = len(t["direct"])
    direct = sum(counts[:n])
    definition, declaration, description = counts[n], counts[n + 1], counts[n + 2]
    return {
        "tools": t["tools"],
        "typed": t["typed"],
        "direct": direct,
        "definition": definition,
        "declaration": declaration,
        "prose": description - declaration,
        "definition_ratio": definition / direct,
        "declaration_ratio": declaration / direct,
    }


def git_describe(ref: str) -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True
    )
    return out.stdout.strip() or ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="commit to compare with")
    parser.add_argument("--no-baseline", action="store_true", help="measure this tree only")
    parser.add_argument("--texts", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--show", action="store_true", help="print the declaration too")
    args = parser.parse_args()
    if args.texts:  # the child measuring another commit
        print(json.dumps(texts()))
        return
    rows: list[tuple[str, str, dict[str, float]]] = []
    current: dict[str, typing.Any] = {}
    for typed_dict in ("typing", "typing_extensions"):
        if not args.no_baseline:
            label = f"main {git_describe(args.baseline)}"
            rows.append((label, typed_dict, figures(child_texts(args.baseline, typed_dict))))
        current = child_texts(None, typed_dict)
        rows.append((f"this tree {git_describe('HEAD')}", typed_dict, figures(current)))
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    cpu = platform.processor() or platform.machine()
    print(
        f"# {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC | {cpu}, "
        f"{os.cpu_count()} cores | Python {platform.python_version()} | node {node}, "
        "gpt-tokenizer 4.0.0 (o200k_base)"
    )
    print(f"\n{current['tools']} LangChain tools with typed arguments and results\n")
    print(
        "| code | results typed with | tools' own definitions | `run_js_sandboxed` "
        "definition (ratio) | declaration alone (ratio) | rest of the description | "
        "results declared |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, typed_dict, f in rows:
        print(
            f"| {label} | `{typed_dict}.TypedDict` | {f['direct']:.0f} | "
            f"{f['definition']:.0f} ({f['definition_ratio']:.2f}x) | "
            f"{f['declaration']:.0f} ({f['declaration_ratio']:.2f}x) | {f['prose']:.0f} | "
            f"{f['typed']:.0f} of {f['tools']:.0f} |"
        )
    print("| target | | | <= 1.00x | <= 0.75x | | |")
    if args.show:
        print("\n```ts\n" + current["declaration"] + "\n```")
        print("\n" + current["description"].replace(current["declaration"], "<declaration>"))


if __name__ == "__main__":
    main()
