/**
 * HTML → plain text, good enough for embedding: no DOM, one linear scan.
 *
 * - `<script>`, `<style>`, `<noscript>`, `<template>`, `<svg>` and
 *   `<iframe>` content, comments, doctypes and processing instructions are
 *   dropped (the `<title>` is kept as the first paragraph)
 * - block elements (p, div, li, h1–h6, tr, section, article, pre, …) become
 *   line / paragraph breaks; table cells are separated by a space
 * - whitespace runs collapse to one space except inside `<pre>` /
 *   `<textarea>`; at most one blank line separates paragraphs
 * - character references are decoded (common named ones and numeric)
 *
 * @since 0.1.0
 */

const named: Record<string, string> = {
  amp: "&",
  lt: "<",
  gt: ">",
  quot: "\"",
  apos: "'",
  nbsp: " ",
  ensp: " ",
  emsp: " ",
  thinsp: " ",
  shy: "",
  zwj: "",
  zwnj: "",
  copy: "©",
  reg: "®",
  trade: "™",
  hellip: "…",
  mdash: "—",
  ndash: "–",
  minus: "−",
  lsquo: "‘",
  rsquo: "’",
  sbquo: "‚",
  ldquo: "“",
  rdquo: "”",
  bdquo: "„",
  laquo: "«",
  raquo: "»",
  lsaquo: "‹",
  rsaquo: "›",
  bull: "•",
  middot: "·",
  deg: "°",
  plusmn: "±",
  times: "×",
  divide: "÷",
  frac12: "½",
  frac14: "¼",
  frac34: "¾",
  sup2: "²",
  sup3: "³",
  micro: "µ",
  para: "¶",
  sect: "§",
  euro: "€",
  pound: "£",
  yen: "¥",
  cent: "¢",
  iexcl: "¡",
  iquest: "¿",
  larr: "←",
  rarr: "→",
  uarr: "↑",
  darr: "↓",
  harr: "↔",
  rArr: "⇒",
  lArr: "⇐",
  hArr: "⇔",
  le: "≤",
  ge: "≥",
  ne: "≠",
  asymp: "≈",
  infin: "∞",
  check: "✓",
  dagger: "†",
  Dagger: "‡",
  prime: "′",
  Prime: "″",
  auml: "ä",
  ouml: "ö",
  uuml: "ü",
  Auml: "Ä",
  Ouml: "Ö",
  Uuml: "Ü",
  szlig: "ß",
  eacute: "é",
  egrave: "è",
  ecirc: "ê",
  Eacute: "É",
  aacute: "á",
  agrave: "à",
  acirc: "â",
  iacute: "í",
  oacute: "ó",
  uacute: "ú",
  ntilde: "ñ",
  Ntilde: "Ñ",
  ccedil: "ç",
  Ccedil: "Ç",
  oslash: "ø",
  aring: "å",
  aelig: "æ",
  alpha: "α",
  beta: "β",
  gamma: "γ",
  delta: "δ",
  lambda: "λ",
  mu: "μ",
  pi: "π",
  sigma: "σ",
  omega: "ω"
}

const fromCodePoint = (cp: number): string =>
  Number.isFinite(cp) && cp > 0 && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff)
    ? String.fromCodePoint(cp)
    : "\uFFFD"

/**
 * Decode HTML character references. Unknown named references are kept as
 * written.
 *
 * @since 0.1.0
 * @category utils
 */
export const decodeEntities = (text: string): string =>
  text.indexOf("&") === -1
    ? text
    : text.replace(/&(?:#[xX]([0-9a-fA-F]{1,8});?|#([0-9]{1,10});?|([A-Za-z][A-Za-z0-9]{1,31});)/g, (m, hex, dec, name) => {
      if (hex !== undefined) return fromCodePoint(parseInt(hex, 16))
      if (dec !== undefined) return fromCodePoint(parseInt(dec, 10))
      const value = named[name as string]
      return value === undefined ? m : value
    })

/** elements whose content is dropped entirely */
const dropped = new Set(["script", "style", "noscript", "template", "svg", "iframe"])

/** elements after / before which a paragraph break is inserted */
const paragraphBlocks = new Set([
  "address",
  "article",
  "aside",
  "blockquote",
  "body",
  "center",
  "details",
  "dialog",
  "dl",
  "fieldset",
  "figure",
  "footer",
  "form",
  "h1",
  "h2",
  "h3",
  "h4",
  "h5",
  "h6",
  "header",
  "hgroup",
  "hr",
  "html",
  "main",
  "nav",
  "ol",
  "p",
  "pre",
  "section",
  "table",
  "title",
  "ul"
])

/** elements after / before which a line break is inserted */
const lineBlocks = new Set([
  "br",
  "caption",
  "dd",
  "div",
  "dt",
  "figcaption",
  "legend",
  "li",
  "option",
  "summary",
  "tbody",
  "tfoot",
  "thead",
  "tr"
])

const cells = new Set(["td", "th"])

const preformatted = new Set(["pre", "textarea", "listing", "plaintext", "xmp"])

const tokenRe =
  /<!--[\s\S]*?(?:--!?>|$)|<!\[CDATA\[([\s\S]*?)(?:\]\]>|$)|<![^>]*>?|<\?[^>]*>?|<(\/?)([A-Za-z][A-Za-z0-9:-]*)((?:[^>"']|"[^"]*"|'[^']*')*)>/g

/**
 * Convert an HTML document (or fragment) to plain text.
 *
 * @since 0.1.0
 * @category utils
 */
export const htmlToText = (html: string): string => {
  const out: Array<string> = []
  /** 0 none, 1 newline, 2 blank line */
  let pendingBreak = 0
  let lastWasSpace = true
  let preDepth = 0

  const breakLine = (level: number): void => {
    if (level > pendingBreak) pendingBreak = level
  }

  const flushBreak = (): void => {
    if (pendingBreak > 0 && out.length > 0) {
      const last = out.length - 1
      out[last] = out[last]!.replace(/[ \t]+$/, "")
      out.push(pendingBreak >= 2 ? "\n\n" : "\n")
    }
    if (pendingBreak > 0) lastWasSpace = true
    pendingBreak = 0
  }

  const text = (raw: string): void => {
    if (raw.length === 0) return
    if (preDepth > 0) {
      let t = decodeEntities(raw.replace(/\r\n?/g, "\n"))
      if (t.length === 0) return
      if (pendingBreak > 0 && out.length > 0 && t.startsWith("\n")) t = t.slice(1)
      flushBreak()
      out.push(t)
      lastWasSpace = /\s$/.test(t)
      return
    }
    let t = decodeEntities(raw).replace(/[\s\u00a0]+/g, " ")
    if (lastWasSpace || pendingBreak > 0) t = t.replace(/^ /, "")
    if (t.length === 0) return
    flushBreak()
    out.push(t)
    lastWasSpace = t.endsWith(" ")
  }

  const space = (): void => {
    if (!lastWasSpace && pendingBreak === 0) {
      out.push(" ")
      lastWasSpace = true
    }
  }

  tokenRe.lastIndex = 0
  let pos = 0
  for (;;) {
    const m = tokenRe.exec(html)
    if (m === null) break
    if (m.index > pos) text(html.slice(pos, m.index))
    pos = tokenRe.lastIndex
    const cdata = m[1]
    const tag = m[3]
    if (cdata !== undefined) {
      text(cdata.replace(/&/g, "&amp;"))
      continue
    }
    if (tag === undefined) continue // comment, doctype, processing instruction
    const name = tag.toLowerCase()
    const closing = m[2] === "/"
    const attributes = m[4] ?? ""
    const selfClosing = attributes.trimEnd().endsWith("/")
    if (!closing && dropped.has(name)) {
      if (selfClosing) continue
      // raw-text content: skip to the matching end tag (or the end of input)
      const close = new RegExp(`</${name}(?:\\s[^>]*)?>`, "ig")
      close.lastIndex = pos
      pos = close.exec(html) === null ? html.length : close.lastIndex
      tokenRe.lastIndex = pos
      continue
    }
    if (name === "br") {
      if (preDepth > 0) {
        flushBreak()
        out.push("\n")
        lastWasSpace = true
      } else if (out.length > 0) {
        pendingBreak = Math.min(2, pendingBreak + 1)
      }
      continue
    }
    if (preformatted.has(name)) {
      preDepth = Math.max(0, preDepth + (closing ? -1 : selfClosing ? 0 : 1))
    }
    if (paragraphBlocks.has(name)) breakLine(2)
    else if (lineBlocks.has(name)) breakLine(1)
    else if (cells.has(name)) {
      if (closing) space()
    } else if (name === "img" && !closing) {
      const alt = /\balt\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))/i.exec(attributes)
      const value = alt === null ? undefined : alt[1] ?? alt[2] ?? alt[3]
      if (value !== undefined && value.trim().length > 0) {
        space()
        text(value)
        space()
      }
    }
  }
  if (pos < html.length) text(html.slice(pos))

  return out
    .join("")
    .split("\n")
    .map((line) => line.replace(/[ \t]+$/, ""))
    .join("\n")
    .replace(/\n{3,}/g, "\n\n")
    .trim()
}
