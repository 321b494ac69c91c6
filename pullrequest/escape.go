package pullrequest

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// inlineEscaper makes text from users and models (model names, errors,
// logins, file paths) inert inside a Markdown table cell: no cell break
// (`|`), no HTML (`<script>`, or `-->` closing the marker), no code span,
// emphasis, link or @mention. HTML entities and backslash escapes both
// render as the character itself on GitHub.
var inlineEscaper = strings.NewReplacer(
	`\`, `\\`,
	"|", `\|`,
	"`", "&#96;",
	"<", "&lt;",
	">", "&gt;",
	"&", "&amp;",
	"*", `\*`,
	"_", `\_`,
	"[", `\[`,
	"]", `\]`,
	"~", `\~`,
	"@", "&#64;",
	"#", "&#35;",
	":", "&#58;", // no :emoji: shortcodes or autolinked URLs
)

// Text escapes s for one line of Markdown (a table cell, a list item):
// controls and line breaks become spaces, and at most max runes are kept
// (0: no limit), cut on a rune boundary with an ellipsis.
func Text(s string, max int) string {
	s = truncateRunes(strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s), max)
	return inlineEscaper.Replace(s)
}

// truncateRunes keeps at most max runes of s (0: no limit), ending with
// "…" when it cut.
func truncateRunes(s string, max int) string {
	if max <= 0 || utf8.RuneCountInString(s) <= max {
		return s
	}
	n := 0
	for i := range s {
		if n == max-1 {
			return s[:i] + "…"
		}
		n++
	}
	return s
}
