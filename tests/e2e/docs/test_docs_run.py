"""Unit tests of docs_run.py's conventions (python3 -m unittest, from this directory)."""

import tempfile
import unittest
from pathlib import Path

import docs_run as d


class Conventions(unittest.TestCase):
    def test_markers_and_indented_fences(self):
        text = (
            "# t\n\n<!-- docs-run: skip (needs az) -->\n```sh\naz login\n```\n\n"
            "1. step\n\n   ```sh\n   echo hi\n   ```\n\n<!-- docs-run: file a.toml -->\n```toml\nx = 1\n```\n"
        )
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "x.md"
            p.write_text(text)
            blocks = d.parse_blocks(p, "x.md")
        self.assertEqual([(b.lang, b.marker) for b in blocks],
                         [("sh", "skip (needs az)"), ("sh", None), ("toml", "file a.toml")])
        self.assertEqual(blocks[1].text, "echo hi\n")
        self.assertEqual(blocks[0].line, 4)

    def test_steps_expectations_and_multiline_commands(self):
        steps = d.split_steps(
            "# prose\nX=1\necho $X   # → 1\nfor i in 1 2; do\n  echo $i\ndone\n# → 2\n"
            "curl a \\\n  b\n# → exit status 7\n"
        )
        self.assertEqual([s.code.splitlines()[0] for s in steps], ["X=1", "echo $X   # → 1", "for i in 1 2; do", "curl a \\"])
        self.assertEqual(steps[1].expect, ["1"])
        self.assertEqual(steps[2].expect, ["2"])
        self.assertEqual(steps[3].exit_status, 7)
        with self.assertRaises(ValueError):
            d.split_steps("# → out before any command\n")
        with self.assertRaises(ValueError):
            d.split_steps("for i in 1; do\n")

    def test_output_matching_in_order_with_wildcards(self):
        out = "\x1b[32mINFO\x1b[0m listening on http://127.0.0.1:6732\n{\"signature\":\"p2sigAbc\"}\n"
        self.assertIsNone(d.unmatched(["listening on http://127.0.0.1:6732", '{"signature":"p2sig…"}'], out))
        self.assertEqual(d.unmatched(['{"signature":"p2sig…"}', "listening on"], out), "listening on")
        self.assertEqual(d.unmatched(["p2pk…"], out), "p2pk…")

    def test_placeholders_fail_outside_comments(self):
        d.check_placeholders(d.Step("tzkms keys list   # --curve p256|bls <x>…", []))
        for code in ("octez-client import secret key <alias> x", "tzkms watermark floor tz3… --level 1"):
            with self.assertRaises(d.DocFailure):
                d.check_placeholders(d.Step(code, []))


if __name__ == "__main__":
    unittest.main()
