@main
struct OneTun {
    static func main() {}
}
