// Routing preferences through the official `openai` npm SDK on multipart: extra params next to `file` are sent
// as bracketed form fields (provider[order][]=gamma, models[]=m1, ...). Prints, per dialect, what served each
// request (or the error) as one JSON object; tests/test_form_routing.py (test_npm_sdk_extra_params) checks it.
// Usage: AUDIOROUTER_URL=http://127.0.0.1:8000 node routing_test.mjs <audio file>
import fs from "fs";
import OpenAI from "openai";

const [audio] = process.argv.slice(2);
const out = {};

async function served(client, params) {
  try {
    const { response } = await client.audio.transcriptions
      .create({ file: fs.createReadStream(audio), ...params })
      .withResponse();
    return { provider: response.headers.get("x-provider"), model: response.headers.get("x-model") };
  } catch (e) {
    const err = e.error ?? {};
    return { status: e.status ?? null, param: err.param ?? err.metadata?.param ?? null };
  }
}

for (const dialect of ["/v1", "/api/v1"]) {
  const client = new OpenAI({ baseURL: `${process.env.AUDIOROUTER_URL}${dialect}`, apiKey: "sk-test", maxRetries: 0 });
  out[dialect] = {
    models: await served(client, { model: "route/m1", models: ["route/m1", "route/m2", "route/m3"] }),
    order: await served(client, { model: "route/stt", provider: { order: ["gamma", "beta"] } }),
    no_fallbacks: await served(client, { model: "route/stt", provider: { allow_fallbacks: false } }),
    max_price: await served(client, { model: "route/stt", provider: { ignore: ["gamma"], max_price: { audio: 0.00006 } } }),
    bad_order: await served(client, { model: "route/stt", provider: { order: [{ slug: "beta" }] } }),
    bad_bool: await served(client, { model: "route/stt", provider: { allow_fallbacks: "maybe" } }),
  };
}
console.log(JSON.stringify(out));
