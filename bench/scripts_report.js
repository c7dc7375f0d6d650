// Monthly revenue report: orders of one month, grouped and summarised.
const month = args.month;
const count = args.orders ?? 40;
const CURRENCIES = { EUR: 1, USD: 0.92, GBP: 1.17, CHF: 1.04, SEK: 0.088 };
const REGIONS = ["north", "south", "east", "west", "central"];
const PRODUCTS = [
  { sku: "A-100", name: "Widget", category: "hardware", price: 19.99 },
  { sku: "A-101", name: "Widget Pro", category: "hardware", price: 39.99 },
  { sku: "B-200", name: "Gadget", category: "hardware", price: 24.5 },
  { sku: "C-300", name: "Support plan", category: "services", price: 99 },
  { sku: "C-301", name: "Onboarding", category: "services", price: 450 },
  { sku: "D-400", name: "License", category: "software", price: 120 },
  { sku: "D-401", name: "License (team)", category: "software", price: 990 },
];

function seededRandom(seed) {
  let s = seed >>> 0;
  return function next() {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

function daysIn(monthText) {
  const [y, m] = monthText.split("-").map(Number);
  if (!y || !m || m < 1 || m > 12) throw new RangeError("month must be YYYY-MM, not " + monthText);
  return new Date(Date.UTC(y, m, 0)).getUTCDate();
}

function pad(n, width) {
  let s = String(n);
  while (s.length < width) s = "0" + s;
  return s;
}

function makeOrders(monthText, count) {
  const rnd = seededRandom(monthText.split("").reduce((a, c) => a * 31 + c.charCodeAt(0), 7));
  const days = daysIn(monthText);
  const codes = Object.keys(CURRENCIES);
  const orders = [];
  for (let i = 0; i < count; i++) {
    const product = PRODUCTS[Math.floor(rnd() * PRODUCTS.length)];
    const qty = 1 + Math.floor(rnd() * 5);
    const currency = codes[Math.floor(rnd() * codes.length)];
    const day = 1 + Math.floor(rnd() * days);
    orders.push({
      id: "O-" + pad(i + 1, 5),
      date: monthText + "-" + pad(day, 2),
      region: REGIONS[Math.floor(rnd() * REGIONS.length)],
      sku: product.sku,
      qty,
      currency,
      unit: product.price / CURRENCIES[currency],
      refunded: rnd() < 0.04,
    });
  }
  return orders;
}

function toEur(order) {
  return order.unit * order.qty * CURRENCIES[order.currency];
}

function round2(x) {
  return Math.round(x * 100) / 100;
}

function groupBy(items, keyOf) {
  const out = new Map();
  for (const item of items) {
    const key = keyOf(item);
    let list = out.get(key);
    if (!list) {
      list = [];
      out.set(key, list);
    }
    list.push(item);
  }
  return out;
}

function sum(items, valueOf) {
  let total = 0;
  for (const item of items) total += valueOf(item);
  return total;
}

function median(values) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function percentile(values, q) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

function productOf(sku) {
  const p = PRODUCTS.find((x) => x.sku === sku);
  if (!p) throw new Error("unknown sku " + sku);
  return p;
}

function summarise(orders) {
  const kept = orders.filter((o) => !o.refunded);
  const amounts = kept.map(toEur);
  return {
    orders: kept.length,
    refunded: orders.length - kept.length,
    revenue_eur: round2(sum(kept, toEur)),
    average_eur: kept.length ? round2(sum(kept, toEur) / kept.length) : 0,
    median_eur: amounts.length ? round2(median(amounts)) : null,
    p90_eur: amounts.length ? round2(percentile(amounts, 0.9)) : null,
  };
}

function byCategory(orders) {
  const groups = groupBy(orders, (o) => productOf(o.sku).category);
  const out = {};
  for (const [category, list] of groups) out[category] = summarise(list);
  return out;
}

function byRegion(orders) {
  const groups = groupBy(orders, (o) => o.region);
  const rows = [];
  for (const [region, list] of groups) rows.push({ region, ...summarise(list) });
  rows.sort((a, b) => b.revenue_eur - a.revenue_eur || a.region.localeCompare(b.region));
  return rows;
}

function byWeek(orders) {
  const groups = groupBy(orders, (o) => "W" + (1 + Math.floor((Number(o.date.slice(8)) - 1) / 7)));
  const weeks = [...groups.keys()].sort();
  return weeks.map((w) => ({ week: w, revenue_eur: summarise(groups.get(w)).revenue_eur }));
}

function topProducts(orders, n) {
  const groups = groupBy(
    orders.filter((o) => !o.refunded),
    (o) => o.sku,
  );
  const rows = [];
  for (const [sku, list] of groups) {
    rows.push({
      sku,
      name: productOf(sku).name,
      units: sum(list, (o) => o.qty),
      revenue_eur: round2(sum(list, toEur)),
    });
  }
  rows.sort((a, b) => b.revenue_eur - a.revenue_eur);
  return rows.slice(0, n);
}

function currencyMix(orders) {
  const groups = groupBy(orders, (o) => o.currency);
  const total = sum(orders, toEur) || 1;
  const mix = {};
  for (const [code, list] of groups) mix[code] = round2((100 * sum(list, toEur)) / total);
  return mix;
}

function anomalies(orders) {
  const amounts = orders.map(toEur);
  const p99 = percentile(amounts, 0.99) || 0;
  return orders
    .filter((o) => toEur(o) >= p99 && !o.refunded)
    .map((o) => ({ id: o.id, sku: o.sku, eur: round2(toEur(o)) }));
}

function validate(report) {
  const regionTotal = round2(sum(report.regions, (r) => r.revenue_eur));
  const drift = Math.abs(regionTotal - report.total.revenue_eur);
  if (drift > 0.05 * report.regions.length) {
    throw new Error("regional totals drift from the total by " + drift);
  }
  return true;
}

function formatLine(row) {
  const cells = [row.region.padEnd(8), String(row.orders).padStart(5)];
  cells.push(row.revenue_eur.toFixed(2).padStart(12));
  return cells.join(" | ");
}

const orders = makeOrders(month, count);
const report = {
  month,
  days: daysIn(month),
  total: summarise(orders),
  categories: byCategory(orders),
  regions: byRegion(orders),
  weeks: byWeek(orders),
  top: topProducts(orders, 3),
  currencies: currencyMix(orders),
  anomalies: anomalies(orders),
};
report.valid = validate(report);
report.table = report.regions.map(formatLine);
report;
