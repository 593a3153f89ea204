// Parses a Markdown file with markdown-it (CommonMark + GFM tables) and prints its
// structure as JSON: headings (level, text), tables (column count per row), and the
// number of inline tokens, so tests can check a document renders as intended.
import fs from "node:fs";
import MarkdownIt from "markdown-it";

const md = new MarkdownIt();
const tokens = md.parse(fs.readFileSync(process.argv[2], "utf8"), {});
const out = { headings: [], tables: [], html: md.render(fs.readFileSync(process.argv[2], "utf8")).length };
let table = null, row = null;
for (let i = 0; i < tokens.length; i++) {
  const t = tokens[i];
  if (t.type === "heading_open") out.headings.push({ level: Number(t.tag.slice(1)), text: tokens[i + 1].content });
  if (t.type === "table_open") table = [];
  if (t.type === "tr_open") row = 0;
  if (t.type === "th_open" || t.type === "td_open") row++;
  if (t.type === "tr_close") table.push(row);
  if (t.type === "table_close") { out.tables.push(table); table = null; }
}
console.log(JSON.stringify(out));
