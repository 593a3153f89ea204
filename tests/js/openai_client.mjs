// The official OpenAI Node.js client against `palm serve`: models, completions
// (plain and streamed), chat (plain and streamed), and the client's error classes for
// a 400 and a 401. Prints one JSON object for test_serve to check.
// usage: node openai_client.mjs BASE_URL API_KEY MODEL PROMPT MAX_TOKENS
import OpenAI from "openai";

const [baseURL, apiKey, model, prompt, maxTokens] = process.argv.slice(2);
// Node's own fetch (undici): the node-fetch 2 the client falls back to reports a false
// "Premature close" on kept-alive chunked responses under Node 18 (Debian 12's node)
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, fetch: globalThis.fetch });
const out = {};

out.models = (await client.models.list()).data.map((m) => m.id);

const c = await client.completions.create({ model, prompt, max_tokens: Number(maxTokens), temperature: 0 });
out.completion = c.choices[0].text;

let streamed = "";
for await (const chunk of await client.completions.create({ model, prompt, max_tokens: Number(maxTokens), temperature: 0, stream: true })) {
  streamed += chunk.choices[0]?.text ?? "";
}
out.streamed = streamed;

const messages = [{ role: "user", content: "Say hello." }];
const chat = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0 });
out.chat = chat.choices[0].message.content;
out.chat_finish = chat.choices[0].finish_reason;
let chatStreamed = "";
for await (const chunk of await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0, stream: true })) {
  chatStreamed += chunk.choices[0]?.delta?.content ?? "";
}
out.chat_streamed = chatStreamed;

try {
  await client.completions.create({ model, prompt, max_tokens: -1 });
} catch (e) {
  out.bad_request_status = e instanceof OpenAI.BadRequestError ? e.status : `unexpected ${e}`;
}
try {
  await new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0, fetch: globalThis.fetch }).models.list();
} catch (e) {
  out.unauthorized_status = e instanceof OpenAI.AuthenticationError ? e.status : `unexpected ${e}`;
}
console.log(JSON.stringify(out));
