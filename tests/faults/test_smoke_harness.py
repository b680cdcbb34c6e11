from harness import our_frames, PACKAGE_DIR


def test_our_frames_finds_only_package_frames():
    text = f'  File "{PACKAGE_DIR}/cli.py", line 3, in main\n  File "/tmp/x/t.py", line 1\n'
    assert our_frames(text) == [f'  File "{PACKAGE_DIR}/cli.py", line 3, in main']
