// Quickstart code for one model, filled with this server's base URL. The key comes from the environment
// (AUDIOROUTER_API_KEY), never from the page. Transcription snippets read ./audio.wav; speech ones write
// ./speech.mp3; chat ones ask a question and (for a model that speaks, given its voice) write ./answer.wav
// (curl: ./answer.json).
export const LANGUAGES = [
  { id: "python", label: "Python (openai)" },
  { id: "typescript", label: "TypeScript (openai)" },
  { id: "curl", label: "curl" },
  { id: "openrouter", label: "OpenRouter SDK (Python)" },
];

const q = (s) => JSON.stringify(s); // a string literal valid in Python and TypeScript
const shq = (s) => `'${String(s).replaceAll("'", "'\\''")}'`; // a single-quoted shell word

const SAY = "Hello from audiorouter.";

export function quickstart(lang, kind, base, model, voice) {
  const v1 = `${base}/v1`;
  if (kind === "chat") return chatQuickstart(lang, base, model, voice);
  const stt = kind === "transcription";
  if (lang === "python") {
    return stt ? `# pip install openai
import os
from openai import OpenAI

client = OpenAI(base_url=${q(v1)}, api_key=os.environ.get("AUDIOROUTER_API_KEY", "none"))
with open("audio.wav", "rb") as f:
    transcript = client.audio.transcriptions.create(model=${q(model)}, file=f)
print(transcript.text)
` : `# pip install openai
import os
from openai import OpenAI

client = OpenAI(base_url=${q(v1)}, api_key=os.environ.get("AUDIOROUTER_API_KEY", "none"))
with client.audio.speech.with_streaming_response.create(
        model=${q(model)}, voice=${q(voice || "alloy")}, input=${q(SAY)}, response_format="mp3") as response:
    response.stream_to_file("speech.mp3")
print("wrote speech.mp3")
`;
  }
  if (lang === "typescript") {
    return stt ? `// npm install openai
import fs from "node:fs";
import OpenAI from "openai";

const client = new OpenAI({ baseURL: ${q(v1)}, apiKey: process.env.AUDIOROUTER_API_KEY ?? "none" });
const transcript = await client.audio.transcriptions.create({
  model: ${q(model)},
  file: fs.createReadStream("audio.wav"),
});
console.log(transcript.text);
` : `// npm install openai
import fs from "node:fs";
import OpenAI from "openai";

const client = new OpenAI({ baseURL: ${q(v1)}, apiKey: process.env.AUDIOROUTER_API_KEY ?? "none" });
const speech = await client.audio.speech.create({
  model: ${q(model)}, voice: ${q(voice || "alloy")}, input: ${q(SAY)}, response_format: "mp3",
});
fs.writeFileSync("speech.mp3", Buffer.from(await speech.arrayBuffer()));
`;
  }
  if (lang === "curl") {
    return stt ? `curl -sS ${shq(`${v1}/audio/transcriptions`)} \\
  -H "Authorization: Bearer $AUDIOROUTER_API_KEY" \\
  -F model=${shq(model)} \\
  -F file=@audio.wav
` : `curl -sS ${shq(`${v1}/audio/speech`)} \\
  -H "Authorization: Bearer $AUDIOROUTER_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d ${shq(JSON.stringify({ model, voice: voice || "alloy", input: SAY, response_format: "mp3" }))} \\
  -o speech.mp3
`;
  }
  return stt ? `# pip install openrouter
import base64, os
from openrouter import OpenRouter

with open("audio.wav", "rb") as f:
    audio = base64.b64encode(f.read()).decode()
with OpenRouter(api_key=os.environ.get("AUDIOROUTER_API_KEY", "none"), server_url=${q(`${base}/api/v1`)}) as client:
    result = client.stt.create_transcription(model=${q(model)}, input_audio={"data": audio, "format": "wav"})
    print(result.text)
` : `# pip install openrouter
import os
from openrouter import OpenRouter

with OpenRouter(api_key=os.environ.get("AUDIOROUTER_API_KEY", "none"), server_url=${q(`${base}/api/v1`)}) as client:
    response = client.tts.create_speech(model=${q(model)}, voice=${q(voice || "alloy")}, input=${q(SAY)},
                                        response_format="mp3")
    with open("speech.mp3", "wb") as out:
        for chunk in response.iter_bytes():
            out.write(chunk)
    response.close()
`;
}

const ASK = "What is the capital of France? Answer in one sentence.";

function chatQuickstart(lang, base, model, voice) {
  const v1 = `${base}/v1`;
  const messages = [{ role: "user", content: ASK }];
  if (lang === "python") {
    return voice ? `# pip install openai
import base64, os
from openai import OpenAI

client = OpenAI(base_url=${q(v1)}, api_key=os.environ.get("AUDIOROUTER_API_KEY", "none"))
completion = client.chat.completions.create(
    model=${q(model)}, modalities=["text", "audio"], audio={"voice": ${q(voice)}, "format": "wav"},
    messages=[{"role": "user", "content": ${q(ASK)}}])
answer = completion.choices[0].message.audio
with open("answer.wav", "wb") as f:
    f.write(base64.b64decode(answer.data))
print(answer.transcript)
` : `# pip install openai
import os
from openai import OpenAI

client = OpenAI(base_url=${q(v1)}, api_key=os.environ.get("AUDIOROUTER_API_KEY", "none"))
completion = client.chat.completions.create(model=${q(model)}, messages=[{"role": "user", "content": ${q(ASK)}}])
print(completion.choices[0].message.content)
`;
  }
  if (lang === "typescript") {
    return voice ? `// npm install openai
import fs from "node:fs";
import OpenAI from "openai";

const client = new OpenAI({ baseURL: ${q(v1)}, apiKey: process.env.AUDIOROUTER_API_KEY ?? "none" });
const completion = await client.chat.completions.create({
  model: ${q(model)}, modalities: ["text", "audio"], audio: { voice: ${q(voice)}, format: "wav" },
  messages: [{ role: "user", content: ${q(ASK)} }],
});
const answer = completion.choices[0].message.audio;
fs.writeFileSync("answer.wav", Buffer.from(answer.data, "base64"));
console.log(answer.transcript);
` : `// npm install openai
import OpenAI from "openai";

const client = new OpenAI({ baseURL: ${q(v1)}, apiKey: process.env.AUDIOROUTER_API_KEY ?? "none" });
const completion = await client.chat.completions.create({
  model: ${q(model)}, messages: [{ role: "user", content: ${q(ASK)} }],
});
console.log(completion.choices[0].message.content);
`;
  }
  if (lang === "curl") {
    const body = voice ? { model, modalities: ["text", "audio"], audio: { voice, format: "wav" }, messages }
                       : { model, messages };
    return `# the answer: .choices[0].message${voice ? ".audio (.transcript, and .data: the base64 wav)" : ".content"}
curl -sS ${shq(`${v1}/chat/completions`)} \\
  -H "Authorization: Bearer $AUDIOROUTER_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d ${shq(JSON.stringify(body))} \\
  -o answer.json
`;
  }
  return `# pip install openrouter
import os
from openrouter import OpenRouter

with OpenRouter(api_key=os.environ.get("AUDIOROUTER_API_KEY", "none"), server_url=${q(`${base}/api/v1`)}) as client:
    result = client.chat.send(model=${q(model)}, messages=[{"role": "user", "content": ${q(ASK)}}])
    print(result.choices[0].message.content)
`;
}
