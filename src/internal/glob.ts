/**
 * A small glob matcher for root-relative POSIX paths (`docs/a/b.md`).
 *
 * Supported syntax:
 *
 * - `*` any run of characters except `/`
 * - `?` one character except `/`
 * - `[abc]`, `[a-z]`, `[!abc]` / `[^abc]` one character from / not from a set
 * - `{a,b}` alternatives (nestable, may contain `/`), expanded before matching
 * - `**` as a whole segment: zero or more segments (`a/**` also matches `a`)
 * - `\x` the character `x` literally
 *
 * Like `.gitignore`: a pattern (alternative) without a `/` matches the
 * basename at any depth (`*.md` matches `a.md` and `docs/x/a.md`); a leading `/` or `./` anchors
 * the pattern at the root; a trailing `/` makes it match directories only.
 * Matching is case-sensitive; `*` and `**` match names that start with `.`.
 *
 * @since 0.1.0
 */

/**
 * One compiled alternative of a pattern (after brace expansion).
 *
 * @since 0.1.0
 * @category models
 */
export interface CompiledGlob {
  /** the alternative as written, after brace expansion */
  readonly source: string
  readonly regex: RegExp
  /** a trailing `/` was given: the pattern only matches directories */
  readonly directoryOnly: boolean
  /**
   * the lower-cased extension (with dot) the final segment ends with
   * literally, e.g. `.log` for `*.log` or `logs/app.log`; undefined when it does not end in a
   * literal extension
   */
  readonly literalExtension: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Matcher {
  readonly patterns: ReadonlyArray<string>
  readonly globs: ReadonlyArray<CompiledGlob>
  /** true when there are no patterns */
  readonly isEmpty: boolean
  /** whether any pattern matches the path */
  readonly matches: (path: string, isDirectory: boolean) => boolean
  /** the compiled alternatives that match the path (files only) */
  readonly matching: (path: string) => ReadonlyArray<CompiledGlob>
}

const MAX_EXPANSIONS = 4096

/** Find the index of the `}` that closes the `{` at `open`, or -1. */
const findClose = (pattern: string, open: number, closeChar: string, openChar: string): number => {
  let depth = 0
  for (let i = open; i < pattern.length; i++) {
    const c = pattern[i]
    if (c === "\\") {
      i++
      continue
    }
    if (c === openChar) depth++
    else if (c === closeChar) {
      depth--
      if (depth === 0) return i
    }
  }
  return -1
}

/** Split the body of a brace group on top-level commas. */
const splitTopLevel = (body: string): Array<string> => {
  const parts: Array<string> = []
  let depth = 0
  let start = 0
  for (let i = 0; i < body.length; i++) {
    const c = body[i]
    if (c === "\\") {
      i++
      continue
    }
    if (c === "{") depth++
    else if (c === "}") depth--
    else if (c === "," && depth === 0) {
      parts.push(body.slice(start, i))
      start = i + 1
    }
  }
  parts.push(body.slice(start))
  return parts
}

/**
 * Expand `{a,b}` groups into separate patterns. A `{` without a matching `}`
 * or without a top-level `,` is kept literally.
 *
 * @since 0.1.0
 * @category utils
 */
export const expandBraces = (pattern: string): Array<string> => {
  const out: Array<string> = []
  const go = (p: string): void => {
    if (out.length >= MAX_EXPANSIONS) return
    let searchFrom = 0
    for (;;) {
      let open = -1
      for (let i = searchFrom; i < p.length; i++) {
        if (p[i] === "\\") {
          i++
          continue
        }
        if (p[i] === "{") {
          open = i
          break
        }
      }
      if (open === -1) {
        out.push(p)
        return
      }
      const close = findClose(p, open, "}", "{")
      if (close === -1) {
        out.push(p)
        return
      }
      const alternatives = splitTopLevel(p.slice(open + 1, close))
      if (alternatives.length < 2) {
        // `{abc}`: not a group; look for a later one
        searchFrom = open + 1
        continue
      }
      const head = p.slice(0, open)
      const tail = p.slice(close + 1)
      for (const alt of alternatives) go(head + alt + tail)
      return
    }
  }
  go(pattern)
  return out
}

const escapeRegex = (c: string): string => /[\\^$.*+?()[\]{}|/]/.test(c) ? "\\" + c : c

/** Translate one path segment (no `/`) to a regex source. */
const segmentToRegex = (segment: string): string => {
  let re = ""
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i]!
    if (c === "\\") {
      const next = segment[i + 1]
      if (next !== undefined) {
        re += escapeRegex(next)
        i++
      } else {
        re += "\\\\"
      }
    } else if (c === "*") {
      while (segment[i + 1] === "*") i++
      re += "[^/]*"
    } else if (c === "?") {
      re += "[^/]"
    } else if (c === "[") {
      const close = segment.indexOf("]", i + 2)
      if (close === -1) {
        re += "\\["
        continue
      }
      let body = segment.slice(i + 1, close)
      let negate = false
      if (body.startsWith("!") || body.startsWith("^")) {
        negate = true
        body = body.slice(1)
      }
      const cls = body.replace(/[\\\]^]/g, (m) => "\\" + m)
      re += negate ? `[^/${cls}]` : `[${cls}]`
      i = close
    } else {
      re += escapeRegex(c)
    }
  }
  return re
}

/** `.log` for `*.log` / `notes.log`; undefined when the extension is not literal. */
const literalExtensionOf = (lastSegment: string): string | undefined => {
  const dot = lastSegment.lastIndexOf(".")
  if (dot === -1) return undefined
  const ext = lastSegment.slice(dot + 1)
  return /^[A-Za-z0-9_+~-]+$/.test(ext) ? "." + ext.toLowerCase() : undefined
}

/**
 * Compile one pattern (which may expand to several alternatives).
 *
 * @since 0.1.0
 * @category constructors
 */
export const compile = (pattern: string): Array<CompiledGlob> =>
  expandBraces(pattern).map((alternative) => {
    let p = alternative
    let directoryOnly = false
    while (p.length > 1 && p.endsWith("/")) {
      p = p.slice(0, -1)
      directoryOnly = true
    }
    let anchored = false
    for (;;) {
      if (p.startsWith("./")) {
        p = p.slice(2)
        anchored = true
      } else if (p.startsWith("/")) {
        p = p.slice(1)
        anchored = true
      } else break
    }
    const segments = p.split("/").filter((s, _i, all) => s !== "" || all.length === 1)
    // a pattern without a slash matches the basename at any depth
    if (!anchored && segments.length === 1 && segments[0] !== "**") segments.unshift("**")
    let re = "^"
    let needSeparator = false
    for (let i = 0; i < segments.length; i++) {
      const seg = segments[i]!
      const last = i === segments.length - 1
      if (seg === "**") {
        if (i === 0) {
          re += last ? ".*" : "(?:.*/)?"
          needSeparator = false
        } else {
          re += "(?:/.*)?"
          needSeparator = true
        }
        // collapse repeated `**` segments
        while (segments[i + 1] === "**") i++
        continue
      }
      re += (needSeparator ? "/" : "") + segmentToRegex(seg)
      needSeparator = true
    }
    re += "$"
    const lastSegment = segments[segments.length - 1] ?? ""
    return {
      source: alternative,
      regex: new RegExp(re),
      directoryOnly,
      literalExtension: literalExtensionOf(lastSegment)
    }
  })

/**
 * Compile a list of patterns into one matcher. Empty and whitespace-only
 * patterns are ignored.
 *
 * @since 0.1.0
 * @category constructors
 */
export const matcher = (patterns: ReadonlyArray<string> = []): Matcher => {
  const kept = patterns.map((p) => p.trim()).filter((p) => p.length > 0)
  const globs = kept.flatMap(compile)
  return {
    patterns: kept,
    globs,
    isEmpty: globs.length === 0,
    matches: (path, isDirectory) => {
      for (const g of globs) {
        if (g.directoryOnly && !isDirectory) continue
        if (g.regex.test(path)) return true
      }
      return false
    },
    matching: (path) => globs.filter((g) => !g.directoryOnly && g.regex.test(path))
  }
}
