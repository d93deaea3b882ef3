"""What every command does around the library: the defaults the original's commands assume (its download, data
folder, run name and result files), and the one-line exits that turn the library's exceptions into messages.
"""
import logging
import sys
from contextlib import contextmanager

DOWNLOAD_DIR = '../Market'            # prepare.py --download_path
DATA_DIR = '../Market/pytorch'        # train.py --data_dir, test.py and demo.py --test_dir
RUN_NAME = 'ft_ResNet50'              # --name
MODEL_DIR = 'model'                   # --model_dir: the folder of the runs
RESULT_FILE = 'pytorch_result.mat'    # test.py writes it, evaluate_gpu.py and demo.py read it
MULTI_RESULT_FILE = 'multi_query.mat'


def os_error_line(err):
    """Return one line for an OSError: the file it concerns and the system's reason."""
    reason = err.strerror or str(err)
    return f'{err.filename}: {reason}' if err.filename is not None else reason


class _CurrentStdout(logging.StreamHandler):
    """Writes each message to sys.stdout as it is when the message comes (a test, or a notebook, may swap it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def print_library_messages():
    """Print the library's messages (the `reid` loggers, INFO and above) on standard output, one line each, as
    the commands always showed them; the library itself only logs."""
    logger = logging.getLogger('reid')
    if not any(isinstance(handler, _CurrentStdout) for handler in logger.handlers):
        handler = _CurrentStdout()
        handler.setFormatter(logging.Formatter('%(message)s'))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@contextmanager
def one_line_errors(script, interrupted=None, also=()):
    """Run a command's work with the library's messages printed (print_library_messages), and exit with one line
    instead of a traceback: `script: message` for a ValueError (the library names the file or flag) and for the
    exception types in `also`, the file and the system's reason for an OSError, and for Ctrl-C `interrupted` (a
    line, or a function returning it; None lets Ctrl-C through)."""
    print_library_messages()
    try:
        yield
    except (ValueError, *also) as err:
        raise SystemExit(f'{script}: {err}') from None
    except OSError as err:
        raise SystemExit(f'{script}: {os_error_line(err)}') from None
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        raise SystemExit(f'{script}: {interrupted() if callable(interrupted) else interrupted}') from None
