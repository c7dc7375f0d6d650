// Order triage: which orders of a month need a human, and why.
const RULES = [];
const NOTES = [];

function rule(name, weight, test, explain) {
  RULES.push({ name, weight, test, explain });
}

function note(text) {
  NOTES.push(text);
}

function money(eur) {
  return eur.toFixed(2) + " EUR";
}

function isHighValue(order) {
  return order.eur >= 80;
}

function isCrossBorder(order) {
  return !["FR", "DE", "BE", "NL", "LU", "IT", "ES"].includes(order.country);
}

function isStale(order) {
  return order.status === "open" && order.items > 2;
}

function isReturned(order) {
  return order.status === "returned";
}

function isVip(customer) {
  return Boolean(customer && customer.vip);
}

function hasDisputes(customer) {
  return Boolean(customer && customer.disputes > 1);
}

rule("high value", 3, (o) => isHighValue(o), (o) => "worth " + money(o.eur));
rule("cross border", 2, (o) => isCrossBorder(o), (o) => "ships to " + o.country);
rule("stale", 2, (o) => isStale(o), (o) => "open with " + o.items + " items");
rule("returned", 1, (o) => isReturned(o), () => "was returned");
rule("vip", -2, (o, c) => isVip(c), () => "customer is a VIP");
rule("disputes", 4, (o, c) => hasDisputes(c), (o, c) => c.disputes + " disputes on file");

const THRESHOLDS = { review: 4, watch: 2 };
const PRIORITY = { review: 0, watch: 1, fine: 2 };

function classify(score) {
  if (score >= THRESHOLDS.review) return "review";
  if (score >= THRESHOLDS.watch) return "watch";
  return "fine";
}

function scoreOrder(order, customer) {
  let score = 0;
  const reasons = [];
  for (const r of RULES) {
    if (r.test(order, customer)) {
      score += r.weight;
      reasons.push(r.explain(order, customer));
    }
  }
  return { score, reasons };
}

function unique(values) {
  return [...new Set(values)];
}

function indexBy(items, key) {
  const out = {};
  for (const item of items) out[item[key]] = item;
  return out;
}

function countBy(items, keyOf) {
  const out = {};
  for (const item of items) {
    const k = keyOf(item);
    out[k] = (out[k] || 0) + 1;
  }
  return out;
}

function sumBy(items, valueOf) {
  let total = 0;
  for (const item of items) total += valueOf(item);
  return Math.round(total * 100) / 100;
}

function byPriority(a, b) {
  return PRIORITY[a.level] - PRIORITY[b.level] || b.score - a.score || a.id.localeCompare(b.id);
}

function validateOrder(order) {
  const problems = [];
  if (typeof order.id !== "string") problems.push("id");
  if (!(order.eur >= 0)) problems.push("eur");
  if (!order.country) problems.push("country");
  if (problems.length) note("order " + order.id + " is missing " + problems.join(", "));
  return problems.length === 0;
}

function summarise(rows) {
  return {
    orders: rows.length,
    review: rows.filter((r) => r.level === "review").length,
    watch: rows.filter((r) => r.level === "watch").length,
    value_eur: sumBy(rows, (r) => r.eur),
    by_status: countBy(rows, (r) => r.status),
  };
}

function headline(summary) {
  if (summary.review === 0) return "Nothing needs a human this month.";
  const s = summary.review === 1 ? "" : "s";
  return summary.review + " order" + s + " need" + (s ? "" : "s") + " a human.";
}

function describe(row) {
  return row.id + " (" + money(row.eur) + "): " + row.reasons.join("; ");
}

function reviewQueue(rows, limit) {
  return rows
    .filter((r) => r.level !== "fine")
    .sort(byPriority)
    .slice(0, limit)
    .map((r) => ({ id: r.id, level: r.level, score: r.score, why: describe(r) }));
}

function perCustomer(rows) {
  const groups = {};
  for (const r of rows) {
    groups[r.customer] = groups[r.customer] || { customer: r.customer, orders: 0, eur: 0 };
    groups[r.customer].orders += 1;
    groups[r.customer].eur = Math.round((groups[r.customer].eur + r.eur) * 100) / 100;
  }
  return Object.values(groups).sort((a, b) => b.eur - a.eur);
}

function flags(rows) {
  const out = {};
  for (const r of RULES) out[r.name] = 0;
  for (const row of rows) for (const name of row.matched) out[name] += 1;
  return out;
}

function matchedRules(order, customer) {
  return RULES.filter((r) => r.test(order, customer)).map((r) => r.name);
}

function checkMonth(text) {
  if (!/^\d{4}-(0[1-9]|1[0-2])$/.test(text)) {
    throw new RangeError("month must be YYYY-MM, not " + JSON.stringify(text));
  }
  return text;
}

function periodOf(text) {
  const [y, m] = text.split("-").map(Number);
  const first = new Date(Date.UTC(y, m - 1, 1));
  const last = new Date(Date.UTC(y, m, 0));
  return { from: first.toISOString().slice(0, 10), to: last.toISOString().slice(0, 10) };
}

function redact(id) {
  return id.slice(0, 2) + "*".repeat(Math.max(0, id.length - 2));
}

function result(month, rows, queue) {
  const summary = summarise(rows);
  return {
    month,
    period: periodOf(month),
    headline: headline(summary),
    summary,
    queue,
    customers: perCustomer(rows).map((c) => ({ ...c, customer: redact(c.customer) })),
    flags: flags(rows),
    notes: NOTES,
  };
}

const month = checkMonth(args.month);
const orders = (await tools.orders({ month })).filter(validateOrder);
const customerIds = unique(orders.map((o) => o.customer));
const customers = indexBy(await tools.customers({ ids: customerIds }), "id");

const rows = orders.map((o) => {
  const customer = customers[o.customer];
  const { score, reasons } = scoreOrder(o, customer);
  return { ...o, score, reasons, level: classify(score), matched: matchedRules(o, customer) };
});

if (rows.length === 0) note("no orders in " + month);
const queue = reviewQueue(rows, 5);
result(month, rows, queue);
