from vaqf.hw.board import BOARDS, Board, get_board
from vaqf.hw.cost import Cost, bram18_for

__all__ = ["BOARDS", "Board", "Cost", "bram18_for", "get_board"]
