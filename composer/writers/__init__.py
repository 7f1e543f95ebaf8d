"""Writers: turn a FileTree (plus settings) into bytes on a stream, deterministically."""
