"""Clients' background tasks, as templates to train the background-task detector on.

Each template is written in our own words after one client's own (the source named beside it), keeping what a
detector can learn from: where the instruction sits (system prompt or user message, before or after the quoted
text), how the conversation is quoted (role lines, tags, JSON), what output is asked (a title, tags, JSON, a
commit message) and the request's shape (no tools, a short output limit). The slots are filled from real user
prompts of the training data (training/tasks.py): ``{conversation}`` (a chat in the template's quoting style),
``{prompt}`` (the user's first message), ``{text}`` (a passage), ``{diff}`` (a change), ``{lang}``.

``HELD_OUT`` clients are never trained on: the detector is scored on them, as on clients nobody tuned it to.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HELD_OUT", "TEMPLATES", "Template"]


@dataclass(frozen=True)
class Template:
    client: str
    kind: str  # title, tags, follow-ups, search, summary, commit, autocomplete, classify, compact
    user: str  # the last user message, with slots
    system: str = ""  # the system prompt, when the client puts its instruction there
    quote: str = "role_lines"  # how {conversation} is written: role_lines, caps, human_ai, json, xml, markdown
    max_tokens: int = 0  # the output limit the client sets (0: none)


_OW = "open-webui"  # backend/open_webui/config.py (task templates)
_LC = "librechat"  # api/app/clients/prompts/titlePrompts.js, summaryPrompts.js
_ST = "sillytavern"  # public/scripts/extensions/memory, quiet prompts
_CO = "continue"  # core/util/chatDescriber.ts, core/commands/slash/built-in-legacy/commit.ts
_CC = "claude-code"  # ../shared/clients/claude-code-2.1.328 (recorded), its compaction prompt
_CX = "codex"  # codex-rs/core/templates/compact
_LO = "lobe-chat"  # src/chains/summaryTitle.ts, summaryTags.ts
_CL = "cline"  # src/core/prompts/commit message / condense
_NX = "nextchat"  # app/constant.ts (topic and summarize prompts)
_AI = "aider"  # aider/prompts.py (commit and summarize)
_OC = "opencode"  # its title agent: the instruction in the system prompt, the user's message quoted after it
_ZD = "zed"  # its thread summary / title prompts
_WR = "written"  # in no client's words: the tasks' ideas, with the instruction in the system prompt or after a diff

HELD_OUT = frozenset({_LO, _CL, _NX, _AI, _OC, _ZD})

TEMPLATES: tuple[Template, ...] = (
    # -- Open WebUI: "### Task:" with a <chat_history> of USER/ASSISTANT lines, JSON answers -------------------------
    Template(_OW, "title", "### Task:\nWrite a brief title of 3-5 words with an emoji that sums up the chat history.\n"
             "### Guidelines:\n- Keep it short and plain\n- Use the chat's main language\n### Output:\nJSON: "
             "{{ \"title\": \"your title\" }}\n### Chat History:\n<chat_history>\n{conversation}\n</chat_history>",
             quote="caps", max_tokens=1000),
    Template(_OW, "tags", "### Task:\nPick 1-3 broad tags for the main themes of the chat history and 1-3 narrower "
             "subtopic tags.\n### Output:\nJSON: {{ \"tags\": [\"tag1\", \"tag2\"] }}\n### Chat History:\n"
             "<chat_history>\n{conversation}\n</chat_history>", quote="caps"),
    Template(_OW, "follow-ups", "### Task:\nSuggest 3-5 questions the user could ask next, from their point of view, "
             "that carry the conversation on.\n### Output:\nJSON: {{ \"follow_ups\": [\"...\"] }}\n### Chat History:\n"
             "<chat_history>\n{conversation}\n</chat_history>", quote="caps"),
    Template(_OW, "search", "### Task:\nFrom the chat history, write 1-3 web search queries that would find what the "
             "user needs now. Today's date is 2026-05-01.\n### Output:\nJSON: {{ \"queries\": [\"q1\"] }}\n"
             "### Chat History:\n<chat_history>\n{conversation}\n</chat_history>", quote="caps"),
    Template(_OW, "autocomplete", "### Task:\nYou finish the user's sentence as they type. Continue the text naturally; "
             "give only the continuation.\n### Output:\nJSON: {{ \"text\": \"...\" }}\n### Context:\n<chat_history>\n"
             "{conversation}\n</chat_history>\n<type>search query</type>\n<text>{prompt}</text>", quote="caps"),
    # -- LibreChat: a plain instruction, "Conversation:" with User/AI lines ---------------------------------------------
    Template(_LC, "title", "Please generate a concise title of five words or fewer for the conversation, in its own "
             "language, without punctuation or quotes. Never mention the word title.\n\nConversation:\n"
             "{conversation}", quote="human_ai", max_tokens=16),
    Template(_LC, "title", "{conversation}", system="Give the conversation below a short, descriptive title in title "
             "case. Reply with the title only.", quote="human_ai", max_tokens=16),
    Template(_LC, "summary", "Progressively summarize the conversation, adding to the previous summary and returning "
             "a new one.\n\nCurrent summary:\nThe user asked for help.\n\nNew lines of conversation:\n{conversation}"
             "\n\nNew summary:", quote="human_ai"),
    # -- SillyTavern: bracketed out-of-character instructions at the end --------------------------------------------------
    Template(_ST, "summary", "{conversation}\n\n[Pause the story. Summarize the most important facts and events so "
             "far in a single paragraph. Do not continue the story.]", quote="role_lines", max_tokens=300),
    Template(_ST, "title", "{conversation}\n\n[Out of character: name this chat in a few words, nothing else.]",
             quote="role_lines", max_tokens=20),
    # -- Continue: title of a session from its first answer, commit messages, compaction ---------------------------------
    Template(_CO, "title", "Create a title of at most 6 words for this exchange. Return only the title, no quotes.\n\n"
             "{prompt}", max_tokens=12),
    Template(_CO, "commit", "{diff}\n\nWrite a commit message for the changes above: one line of at most 72 characters,"
             " then a blank line and up to five short bullets. Output only the commit message."),
    Template(_CO, "compact", "{conversation}\n\nSummarize the conversation so far so work can continue from the "
             "summary alone: the goal, what was done, files touched, and what is left.", quote="markdown"),
    # -- Claude Code: the instruction in the system prompt, the session quoted in tags ----------------------------------
    Template(_CC, "title", "<session>\n{prompt}\n</session>\n\nWrite the title in the main language of the session.",
             system="You are Claude Code, Anthropic's official CLI for Claude.\nYou name coding sessions so the user "
             "can find one in a long list: 3-7 words, sentence case, naming the task, no trailing punctuation. Answer "
             "with the title alone.", max_tokens=64),
    Template(_CC, "compact", "{conversation}\n\nYour task is to write a detailed summary of this conversation so far, "
             "keeping the user's requests, the technical decisions, the files and code changed, errors met and the "
             "pending work, so the session can go on from it.", quote="human_ai"),
    # -- Codex: a handoff summary at compaction ---------------------------------------------------------------------------
    Template(_CX, "compact", "{conversation}\n\nYou are checkpointing this session. Write a handoff summary for another "
             "model that will resume the task: progress, key decisions, constraints, and the next steps.",
             quote="json"),
    Template(_CX, "title", "Summarize the user's request below as a short thread name (under 8 words).\n\n{prompt}",
             max_tokens=30),
    # -- written for training, in no client's words -----------------------------------------------------------------------
    Template(_WR, "title", "{prompt}", system="Name the chat that starts with the user's message below: a short "
             "title of a few words, in the message's language. Do not answer the message; output the title only.",
             max_tokens=40),
    Template(_WR, "tags", "{prompt}", system="Read the user's message and reply with 2-4 topic tags for it as a JSON "
             "array of lowercase strings. Never reply to the message itself.", max_tokens=60),
    Template(_WR, "search", "{prompt}", system="Turn the user's message into one short web search query that would "
             "find an answer. Output the query only.", max_tokens=40),
    Template(_WR, "summary", "{conversation}", system="Summarize the conversation you are given in two sentences for "
             "the chat list preview. Do not continue it.", quote="human_ai", max_tokens=120),
    Template(_WR, "commit", "{diff}", system="You write git commit messages. Given a diff, reply with a one-line "
             "summary in the imperative, optionally followed by a blank line and a short body."),
    Template(_WR, "commit", "Staged changes:\n{diff}\n\nPlease write the commit message for this change."),
    # -- held out: never trained on ---------------------------------------------------------------------------------------
    Template(_LO, "title", "{conversation}\n\nSum up the conversation above as a title of at most 10 words, in {lang}, "
             "with no punctuation.", system="You are good at naming conversations.", quote="json", max_tokens=50),
    Template(_LO, "tags", "Pick up to 5 keywords for this assistant description, comma separated:\n{prompt}",
             system="You are a tagging assistant.", max_tokens=50),
    Template(_CL, "commit", "Here is the git diff of the staged changes:\n\n{diff}\n\nGenerate a concise, "
             "conventional commit message for these changes. Respond with the message only."),
    Template(_CL, "compact", "{conversation}\n\nCondense the conversation above into a summary that keeps every "
             "technical detail needed to continue the task.", quote="xml"),
    Template(_NX, "title", "{conversation}\n\nSummarize the topic of our chat in 4 to 5 words as a title, without "
             "punctuation or quotes.", quote="role_lines", max_tokens=30),
    Template(_NX, "summary", "{conversation}\n\nBriefly summarize the discussion in under 200 words, to be used as "
             "context for future prompts.", quote="role_lines"),
    Template(_AI, "commit", "# Diffs:\n{diff}", system="You are an expert software engineer who writes short one-line "
             "git commit messages from diffs. Review the diffs and reply with just the commit message, in the "
             "imperative mood, under 72 characters."),
    Template(_AI, "summary", "{conversation}", system="Briefly summarize this partial conversation about programming. "
             "Keep the function names, libraries and file names. Write it from the user's point of view.",
             quote="markdown"),
    Template(_OC, "title", "{prompt}", system="You are a title generator. You output only a thread title, nothing "
             "else.\nRules: one line, at most 50 characters, the same language as the user's message, no quotes, "
             "about what the user asks, never answer the question itself.", max_tokens=60),
    Template(_ZD, "title", "{conversation}\n\nGenerate a concise 3-7 word title for this conversation, without "
             "punctuation. Go straight to the title.", quote="markdown", max_tokens=20),
    Template(_ZD, "summary", "{conversation}\n\nSummarize the thread above in a few short bullet points.",
             quote="markdown"),
)
